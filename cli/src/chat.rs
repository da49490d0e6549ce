//! `ant chat`: a conversation with a brew or the default assistant.
//!
//! On a terminal without a question it is a REPL: line editing and history (rustyline, kept in
//! `ANIATE_HOME/chat_history`), answers streamed as they come, Ctrl-C stops the answer (and
//! cancels it up to the provider) but not the chat, Ctrl-D leaves. With a question, or with a
//! question on stdin, it answers once. The conversation lives in this process: each turn sends
//! the messages so far.

use std::io::{IsTerminal, Read, Write};

use aniate_proto::{
    api::{ChatMessage, ChatRole},
    ipc::{ChatParams, Reply, Request},
};
use anyhow::Context;

use crate::{
    app::{Backend, ipc_failure, reipc},
    args::ChatArgs,
    exit::{Exit, Failure},
    render,
};

/// How one answer ended.
enum Turn {
    Answered(String),
    Interrupted,
}

/// Streams one answer to stdout; Ctrl-C drops it, which cancels it.
async fn ask(
    backend: &Backend,
    json: bool,
    assistant: Option<String>,
    messages: &[ChatMessage],
) -> anyhow::Result<Turn> {
    let params = ChatParams { assistant, messages: messages.to_vec() };
    let mut interrupt = crate::interrupt::Interrupt::new();
    let mut replies = backend.request(Request::Chat(params)).await.map_err(reipc)?;
    let mut answer = String::new();
    loop {
        let reply = tokio::select! {
            reply = replies.next() => reply,
            () = interrupt.recv() => {
                drop(replies);
                return Ok(Turn::Interrupted);
            }
        };
        let Some(reply) = reply else { break };
        if json {
            render::json::write_reply_line(&mut std::io::stdout().lock(), &reply)?;
        }
        match reply {
            Reply::Delta(delta) => {
                if !json {
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(render::style::sanitize_text(&delta.text).as_bytes())?;
                    stdout.flush()?;
                }
                answer.push_str(&delta.text);
            }
            Reply::Done(_) => {
                if !json && !answer.ends_with('\n') {
                    println!();
                }
                return Ok(Turn::Answered(answer));
            }
            Reply::Error(error) => return Err(ipc_failure(error)),
            Reply::Meta(_) | Reply::Result(_) => {}
        }
    }
    Err(anyhow::Error::new(Failure::new(Exit::Error, "the answer ended early")))
}

pub(crate) async fn run(json: bool, colored: bool, backend: &Backend, args: ChatArgs) -> anyhow::Result<()> {
    let question = args.question.join(" ");
    let stdin_is_tty = std::io::stdin().is_terminal();
    if !question.trim().is_empty() || !stdin_is_tty {
        let mut text = question;
        if !stdin_is_tty {
            let mut piped = String::new();
            std::io::stdin().read_to_string(&mut piped).context("cannot read stdin")?;
            if !piped.trim().is_empty() {
                text = if text.trim().is_empty() { piped } else { format!("{text}\n\n{piped}") };
            }
        }
        if text.trim().is_empty() {
            return Err(anyhow::Error::new(Failure::new(
                Exit::Usage,
                "nothing to ask: give a question or pipe one in",
            )));
        }
        let messages = vec![ChatMessage { role: ChatRole::User, content: text }];
        return match ask(backend, json, args.brew, &messages).await? {
            Turn::Answered(_) => Ok(()),
            Turn::Interrupted => Err(anyhow::Error::new(Failure::new(Exit::Interrupted, "interrupted"))),
        };
    }
    repl(colored, backend, args.brew).await
}

async fn repl(colored: bool, backend: &Backend, brew: Option<String>) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new().context("cannot set up line editing")?;
    let history = aniated::home::Home::from_env().ok().map(|home| home.root.join("chat_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let palette = render::style::Palette::new(colored);
    let who = brew.clone().unwrap_or_else(|| "aniate".to_owned());
    eprintln!("Chatting with {who}. Ctrl-C stops an answer, Ctrl-D leaves.");
    let prompt = render::style::paint(palette.bold, "you> ");
    let mut messages: Vec<ChatMessage> = Vec::new();
    loop {
        // Read on a blocking thread, so that the runtime keeps running meanwhile: a stopped
        // answer's cancel goes out to the daemon at once, not at the next question.
        let read_prompt = prompt.clone();
        let (returned, read) = tokio::task::spawn_blocking(move || {
            let read = editor.readline(&read_prompt);
            (editor, read)
        })
        .await
        .context("the line editor failed")?;
        editor = returned;
        let line = match read {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(err) => return Err(err).context("cannot read your input"),
        };
        if line.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        messages.push(ChatMessage { role: ChatRole::User, content: line });
        match ask(backend, false, brew.clone(), &messages).await {
            Ok(Turn::Answered(answer)) => messages.push(ChatMessage { role: ChatRole::Assistant, content: answer }),
            Ok(Turn::Interrupted) => {
                eprintln!("\n(stopped)");
                messages.pop();
            }
            Err(err) => {
                messages.pop();
                let message = err.downcast_ref::<Failure>().map_or_else(|| format!("{err:#}"), ToString::to_string);
                eprint!("{}", render::message::render_error(&message, crate::exit::hint_of(&err), colored));
            }
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}
