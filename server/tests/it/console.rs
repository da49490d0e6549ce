//! The console through the real server: sign-in and its cookie, CSRF on every form, the CSP,
//! the admin's tool pages (create, edit, history, diff, rollback, activate), a user's pages,
//! and that a user never gets an admin page or a prompt.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Harness, db_tests};

db_tests!(
    admin_manages_tools_in_the_console,
    users_get_their_pages_and_never_an_admin_page_or_a_prompt,
    admin_sees_usage_per_day_and_exports_what_is_shown,
    admin_manages_users_and_plans
);

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// A browser without JavaScript: keeps cookies, does not follow redirects.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    pub cookies: BTreeMap<String, String>,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The CSRF token of the page's first form.
    pub fn csrf(&self) -> String {
        let start = self.body.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }
}

impl Browser {
    pub fn new(h: &Harness) -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, base: h.base.clone(), cookies: BTreeMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn finish(&mut self, response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let location = headers.get("location").map(|v| v.to_str().unwrap().to_owned());
        let set_cookies: Vec<String> =
            headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        for cookie in &set_cookies {
            let (pair, _) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let body = response.text().await.unwrap();
        Page { status, location, set_cookies, headers, body }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let response =
            self.http.get(format!("{}{path}", self.base)).header("cookie", self.cookie_header()).send().await.unwrap();
        self.finish(response).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(fields)
            .send()
            .await
            .unwrap();
        self.finish(response).await
    }

    /// Signs in through the console's form; returns the answer to the post.
    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/console/login").await;
        assert_eq!(form.status, 200);
        let csrf = form.csrf();
        self.post("/console/login", &[("csrf", &csrf), ("email", email), ("password", password)]).await
    }
}

async fn admin_manages_tools_in_the_console(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let _api_admin = h.admin_token().await;
    let mut browser = Browser::new(&h);

    // Signed out, every page leads to the sign-in page.
    for path in ["/console", "/console/tools", "/console/me", "/console/tools/fix/history"] {
        let page = browser.get(path).await;
        assert_eq!((page.status, page.location.as_deref()), (303, Some("/console/login")), "{path}");
    }
    let form = browser.get("/console/login").await;
    assert_eq!(form.headers["content-security-policy"], CSP);
    assert_eq!(form.headers["x-frame-options"], "DENY");
    assert!(form.body.contains("<form method=\"post\" action=\"/console/login\">"));
    assert!(!form.body.contains("<script") && !form.body.contains("style="), "nothing inline");

    // The sign-in form needs its CSRF token too, and a wrong password is a 401 page.
    let csrf = form.csrf();
    let page = browser.post("/console/login", &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)]).await;
    assert_eq!(page.status, 403);
    let page = browser
        .post("/console/login", &[("csrf", &csrf), ("email", ADMIN_EMAIL), ("password", "wrong-password-1")])
        .await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("wrong email or password"), "{}", page.body);
    let page = browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!((page.status, page.location.as_deref()), (303, Some("/console")));
    let cookie = page.set_cookies.iter().find(|c| c.starts_with("aniate_session=")).unwrap();
    assert!(
        cookie.contains("; HttpOnly") && cookie.contains("; SameSite=Strict") && cookie.contains("; Path=/console")
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let secret = browser.cookies["aniate_session"].clone();

    // The session is a token of kind `session`, stored hashed, and only good as a cookie.
    let rows = h.query_strings("SELECT t.kind, t.token_hash FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE u.email = 'root@example.test' ORDER BY t.id").await;
    assert_eq!(rows.last().unwrap()[0].as_deref(), Some("session"));
    assert!(rows.iter().all(|row| row[1].as_deref() != Some(secret.as_str())));
    let me = h.http.get(h.url("/me")).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(me.status(), 401, "a session cookie is not an API token");

    let home = browser.get("/console").await;
    assert_eq!(home.location.as_deref(), Some("/console/tools"));
    let tools = browser.get("/console/tools").await;
    assert_eq!(tools.status, 200);
    assert_eq!(tools.headers["content-security-policy"], CSP);
    assert!(tools.body.contains("data-slug=\"fix\""), "{}", tools.body);
    let csrf = tools.csrf();

    // Create a tool; a form without (or with a wrong) CSRF token changes nothing.
    let fields = |prompt: &'static str, message: &'static str| {
        vec![
            ("slug", "haiku"),
            ("name", "Haiku <b>poems</b>"),
            ("description", "Answers in a haiku"),
            ("model", ""),
            ("output", "text"),
            ("guard", "block"),
            ("system_prompt", prompt),
            ("message", message),
        ]
    };
    let mut forged = fields("Answer as a haiku.\r\nKeep it short.\r\n", "first");
    assert_eq!(browser.post("/console/tools", &forged).await.status, 403);
    forged.push(("csrf", "0123456789abcdef0123456789abcdef"));
    assert_eq!(browser.post("/console/tools", &forged).await.status, 403);
    assert_eq!(h.http.get(h.url("/tools/haiku")).send().await.unwrap().status(), 404, "nothing was created");
    let mut create = fields("Answer as a haiku.\r\nKeep it short.\r\n", "first");
    create.push(("csrf", &csrf));
    let created = browser.post("/console/tools", &create).await;
    assert_eq!((created.status, created.location.as_deref()), (303, Some("/console/tools/haiku/history")));
    let public: Value = h.http.get(h.url("/tools/haiku")).send().await.unwrap().json().await.unwrap();
    assert_eq!((public["version"].as_i64(), public["name"].as_str()), (Some(1), Some("Haiku <b>poems</b>")));

    // Text from the database is escaped in pages.
    let tools = browser.get("/console/tools").await;
    assert!(tools.body.contains("Haiku &lt;b&gt;poems&lt;/b&gt;") && !tools.body.contains("<b>poems"));

    // A bad field re-renders the form with the API's message, as a 422.
    let mut bad = fields("p", "");
    bad[1] = ("name", "");
    bad.push(("csrf", &csrf));
    let page = browser.post("/console/tools", &bad).await;
    assert_eq!(page.status, 422);
    assert!(page.body.contains("name must not be empty"), "{}", page.body);

    // Edit: the prompt is in the admin's text area; a change is version 2.
    let edit = browser.get("/console/tools/haiku").await;
    assert!(
        edit.body.contains("<textarea name=\"system_prompt\" required>Answer as a haiku.\nKeep it short.\n</textarea>"),
        "{}",
        edit.body
    );
    let mut change = fields("Answer as a haiku.\r\nKeep it very short.\r\n", "shorter");
    change.push(("existing", "1"));
    change.push(("csrf", &csrf));
    assert_eq!(browser.post("/console/tools", &change).await.status, 303);
    let public: Value = h.http.get(h.url("/tools/haiku")).send().await.unwrap().json().await.unwrap();
    assert_eq!(public["version"], 2);

    // History and the side-by-side diff of versions 1 and 2.
    let history = browser.get("/console/tools/haiku/history").await;
    assert!(history.body.contains("data-version=\"2\"") && history.body.contains("data-version=\"1\""));
    assert!(history.body.contains("shorter") && history.body.contains(ADMIN_EMAIL));
    let diff = browser.get("/console/tools/haiku/diff?from=1&to=2").await;
    assert_eq!(diff.status, 200);
    assert!(diff.body.contains("<tr class=\"changed\"><td class=\"ln\">2</td><td class=\"old\">Keep it short.</td><td class=\"ln\">2</td><td class=\"new\">Keep it very short.</td></tr>"), "{}", diff.body);
    assert!(diff.body.contains("(1 changed lines)"));
    assert_eq!(browser.get("/console/tools/haiku/diff?from=1&to=9").await.status, 404);
    assert_eq!(browser.get("/console/tools/haiku/diff?from=x").await.status, 422);

    // Rollback: a confirmation, then a new version 3 equal to version 1.
    let confirm = browser.get("/console/tools/haiku/rollback?version=1").await;
    assert!(confirm.body.contains("This makes version 3, equal to version 1"), "{}", confirm.body);
    let without = browser.post("/console/tools/haiku/rollback", &[("version", "1")]).await;
    assert_eq!(without.status, 403);
    let rolled = browser
        .post("/console/tools/haiku/rollback", &[("csrf", &confirm.csrf()), ("version", "1"), ("message", "")])
        .await;
    assert_eq!((rolled.status, rolled.location.as_deref()), (303, Some("/console/tools/haiku/history")));
    let public: Value = h.http.get(h.url("/tools/haiku")).send().await.unwrap().json().await.unwrap();
    assert_eq!(public["version"], 3);
    let prompt = h.query_strings("SELECT system_prompt FROM global_tools WHERE slug = 'haiku'").await;
    assert_eq!(prompt[0][0].as_deref(), Some("Answer as a haiku.\nKeep it short.\n"));

    // Deactivate and activate again.
    let off = browser.post("/console/tools/haiku/active", &[("csrf", &csrf), ("active", "0")]).await;
    assert_eq!(off.status, 303);
    assert_eq!(h.http.get(h.url("/tools/haiku")).send().await.unwrap().status(), 404);
    browser.post("/console/tools/haiku/active", &[("csrf", &csrf), ("active", "1")]).await;
    let public: Value = h.http.get(h.url("/tools/haiku")).send().await.unwrap().json().await.unwrap();
    assert_eq!(public["version"], 5);

    // Sign-out revokes the session.
    assert_eq!(browser.post("/console/logout", &[]).await.status, 403, "sign-out needs the CSRF token too");
    let out = browser.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/console/login")));
    browser.cookies.insert("aniate_session".to_owned(), secret);
    assert_eq!(
        browser.get("/console/tools").await.location.as_deref(),
        Some("/console/login"),
        "the old cookie is dead"
    );
}

const MARKER: &str = "CONSOLE-SECRET-PROMPT-5d1e";

async fn users_get_their_pages_and_never_an_admin_page_or_a_prompt(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let admin = h.admin_token().await;
    let tool =
        json!({"slug": "secret", "name": "Secret", "description": "d", "system_prompt": format!("{MARKER} one")});
    assert_eq!(h.push_tool(&admin, tool.clone()).await.status(), 201);
    let mut second = tool.clone();
    second["system_prompt"] = json!(format!("{MARKER} two"));
    h.push_tool(&admin, second).await;
    let api_token = h.signup("user@example.test").await;
    let run = h.run(&api_token, "secret", json!({"instructions": "hi"}), false).await;
    assert_eq!(run.status(), 200);
    run.text().await.unwrap();

    let mut browser = Browser::new(&h);
    assert_eq!(browser.sign_in("user@example.test", "password-123").await.status, 303);
    assert_eq!(browser.get("/console").await.location.as_deref(), Some("/console/me"));

    // Every page a user can load: no prompt, and no admin link.
    let mut seen = Vec::new();
    for path in ["/console/me", "/console/tokens", "/console/brews", "/console/files"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(page.headers["content-security-policy"], CSP);
        assert!(!page.body.contains("/console/tools"), "{path} links to admin pages");
        seen.push(page);
    }
    assert!(seen[0].body.contains("id=\"plan\">free<"), "{}", seen[0].body);
    assert!(seen[0].body.contains("<td>secret</td><td class=\"num\">1</td>"), "the run is counted: {}", seen[0].body);
    let csrf = seen[1].csrf();

    // Admin pages and actions: 403, and no prompt in the answer.
    for path in [
        "/console/tools",
        "/console/tools/new",
        "/console/tools/secret",
        "/console/tools/secret/history",
        "/console/tools/secret/diff?from=1&to=2",
        "/console/tools/secret/rollback?version=1",
        "/console/usage",
        "/console/users",
        "/console/plans",
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 403, "{path}");
        seen.push(page);
    }
    for (path, fields) in [
        (
            "/console/tools",
            vec![
                ("csrf", csrf.as_str()),
                ("slug", "secret"),
                ("name", "n"),
                ("description", "d"),
                ("output", "text"),
                ("guard", "off"),
                ("system_prompt", "mine now"),
                ("existing", "1"),
            ],
        ),
        ("/console/tools/secret/rollback", vec![("csrf", csrf.as_str()), ("version", "1")]),
        ("/console/tools/secret/active", vec![("csrf", csrf.as_str()), ("active", "0")]),
    ] {
        let page = browser.post(path, &fields).await;
        assert_eq!(page.status, 403, "{path}");
        seen.push(page);
    }
    for page in &seen {
        assert!(!page.body.contains(MARKER), "a prompt reached a user's page: {}", page.body);
    }
    let public: Value = h.http.get(h.url("/tools/secret")).send().await.unwrap().json().await.unwrap();
    assert_eq!(public["version"], 2, "nothing changed");

    // API tokens: create (shown once), use, list, revoke; another user's token is not theirs.
    let created = browser.post("/console/tokens", &[("csrf", &csrf), ("name", "ci")]).await;
    assert_eq!(created.status, 200);
    let start = created.body.find("id=\"new-token\">").unwrap() + "id=\"new-token\">".len();
    let token = created.body[start..].split('<').next().unwrap().to_owned();
    assert!(token.starts_with("ant_"), "{token}");
    let me = h.http.get(h.url("/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let list = browser.get("/console/tokens").await;
    assert!(list.body.contains("<td>ci</td>") && !list.body.contains(&token), "a token is shown only once");
    let id = h.query_strings("SELECT id FROM api_tokens WHERE name = 'ci'").await[0][0].clone().unwrap();
    let admin_token_id = h
        .query_strings(
            "SELECT t.id FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE u.email = 'root@example.test'",
        )
        .await[0][0]
        .clone()
        .unwrap();
    let page = browser.post(&format!("/console/tokens/{admin_token_id}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 404, "not their token");
    assert_eq!(h.http.get(h.url("/me")).bearer_auth(&admin).send().await.unwrap().status(), 200);
    assert_eq!(browser.post(&format!("/console/tokens/{id}/revoke"), &[]).await.status, 403);
    let revoked = browser.post(&format!("/console/tokens/{id}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(revoked.status, 303);
    assert_eq!(h.http.get(h.url("/me")).bearer_auth(&token).send().await.unwrap().status(), 401);

    // Sessions are revoked like tokens: logging out everywhere signs the console out too.
    let all = h.http.post(h.url("/auth/logout-all")).bearer_auth(&api_token).send().await.unwrap();
    assert_eq!(all.status(), 204);
    assert_eq!(browser.get("/console/me").await.location.as_deref(), Some("/console/login"));

    // The console's sign-in is the API's: the same throttle counts failures of both.
    let mut other = Browser::new(&h);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(other.sign_in("user@example.test", "not-the-password-1").await.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let api = h
        .http
        .post(h.url("/auth/login"))
        .json(&json!({"email": "user@example.test", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 429, "the API login is throttled by the console's failures");
}

async fn admin_sees_usage_per_day_and_exports_what_is_shown(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let _admin = h.admin_token().await;
    let user = h.signup("=cmd@example.test").await;
    let run = h.run(&user, "what", json!({"instructions": "hi"}), false).await;
    assert_eq!(run.status(), 200);
    run.text().await.unwrap();
    // Usage on two earlier days: an error and a blocked run among them.
    let user_id =
        h.query_strings("SELECT id FROM users WHERE email = '=cmd@example.test'").await[0][0].clone().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for (days_ago, status, model) in [(2, "ok", "m-a"), (2, "provider_error", "m-a"), (1, "blocked", "m-b")] {
        let at = now - days_ago * 86_400_000;
        let sql = format!(
            "INSERT INTO usage (user_id, tool, model, prompt_tokens, completion_tokens, latency_ms, status, request_id, created_at) \
             VALUES ({user_id}, 'fix', '{model}', 10, 5, 1, '{status}', 'req_seeded_{days_ago}_{status}', {at})"
        );
        h.query_strings(&sql).await;
    }
    let from = (now - 5 * 86_400_000) / 86_400_000 * 86_400_000;
    let from_text = time::OffsetDateTime::from_unix_timestamp(from / 1000).unwrap().date().to_string();

    let mut browser = Browser::new(&h);
    assert_eq!(browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await.status, 303);
    let page = browser.get(&format!("/console/usage?from={from_text}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for chart in ["chart-requests", "chart-tokens", "chart-errors"] {
        let start = page
            .body
            .find(&format!("id=\"{chart}\" data-points=\""))
            .unwrap_or_else(|| panic!("{chart}: {}", page.body));
        let figure = &page.body[start..];
        let figure = &figure[..figure.find("</figure>").unwrap()];
        assert!(figure.contains("data-points=\"3\""), "three days with usage: {figure}");
        assert_eq!(figure.matches("class=\"point\"").count(), 3, "{figure}");
    }
    assert!(page.body.contains("id=\"total-requests\">4<"), "{}", page.body);
    assert!(page.body.contains("id=\"total-blocked\">1<"));
    assert!(page.body.contains("<td>=cmd@example.test</td>"), "top users");
    assert!(page.body.contains("<td>m-b</td>"), "by model");

    // The CSV is what the page shows, and an email is never a formula.
    let start = page.body.find("id=\"csv\" href=\"").unwrap() + "id=\"csv\" href=\"".len();
    let link = page.body[start..].split('"').next().unwrap().replace("&amp;", "&");
    let csv = browser.get(&link).await;
    assert_eq!(csv.status, 200, "{link}");
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], "section,key,requests,prompt_tokens,completion_tokens,errors,blocked");
    assert_eq!(lines.iter().filter(|line| line.starts_with("day,")).count(), 3, "{}", csv.body);
    assert!(lines.iter().any(|l| l.starts_with("user,'=cmd@example.test,4,")), "{}", csv.body);
    assert!(lines.iter().any(|l| l.starts_with("model,m-a,2,20,10,1,0")), "{}", csv.body);

    // Bad periods are a 422 page; a user gets 403 for both.
    assert_eq!(browser.get("/console/usage?from=yesterday").await.status, 422);
    let mut other = Browser::new(&h);
    assert_eq!(other.sign_in("=cmd@example.test", "password-123").await.status, 303);
    assert_eq!(other.get("/console/usage").await.status, 403);
    assert_eq!(other.get(&link).await.status, 403);
}

async fn admin_manages_users_and_plans(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let _admin = h.admin_token().await;
    let user_token = h.signup("member@example.test").await;
    let mut browser = Browser::new(&h);
    assert_eq!(browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await.status, 303);

    // Define a plan, then put the user on it.
    let plans = browser.get("/console/plans").await;
    assert!(plans.body.contains("data-plan=\"free\""), "{}", plans.body);
    let csrf = plans.csrf();
    let saved = browser
        .post(
            "/console/plans",
            &[
                ("csrf", &csrf),
                ("name", "team"),
                ("requests_per_minute", "7"),
                ("tokens_per_month", "12345"),
                ("max_stored_bytes", ""),
                ("max_stored_files", ""),
                ("cost_limit_usd", "2.50"),
                ("allowed_models", "groq/*, local/llama3.1"),
            ],
        )
        .await;
    assert_eq!(saved.status, 303);
    let plans = browser.get("/console/plans").await;
    assert!(
        plans.body.contains(
            "<td>team</td><td class=\"num\">7</td><td class=\"num\">12345</td><td class=\"num\">$2.500000</td><td>groq/*, local/llama3.1</td>"
        ),
        "{}",
        plans.body
    );
    // The same plan as `define-plan` stores it; blank fields are no limit and any model.
    let stored =
        h.query_strings("SELECT allowed_models, cost_micro_usd_per_month FROM plans WHERE name = 'team'").await;
    assert_eq!(stored[0], [Some("[\"groq/*\",\"local/llama3.1\"]".to_owned()), Some("2500000".to_owned())]);
    let cleared =
        [("csrf", csrf.as_str()), ("name", "team"), ("requests_per_minute", "7"), ("tokens_per_month", "12345")];
    assert_eq!(browser.post("/console/plans", &cleared).await.status, 303);
    let stored =
        h.query_strings("SELECT allowed_models, cost_micro_usd_per_month FROM plans WHERE name = 'team'").await;
    assert_eq!(stored[0], [None, None]);
    let too_long = format!("groq/{}", "m".repeat(130));
    for (field, value, says) in [
        ("cost_limit_usd", "lots", "cost_limit_usd"),
        ("cost_limit_usd", "-1", "cost_limit_usd"),
        ("allowed_models", &too_long, "longer than 128"),
    ] {
        let mut form = cleared.to_vec();
        form.push((field, value));
        let bad = browser.post("/console/plans", &form).await;
        assert_eq!(bad.status, 422, "{field}={value}");
        assert!(bad.body.contains(says), "{}", bad.body);
    }
    let bad = browser
        .post(
            "/console/plans",
            &[("csrf", &csrf), ("name", "no spaces"), ("requests_per_minute", "1"), ("tokens_per_month", "1")],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("is not a plan name"));
    assert_eq!(
        browser
            .post("/console/plans", &[("name", "x"), ("requests_per_minute", "1"), ("tokens_per_month", "1")])
            .await
            .status,
        403
    );

    let users = browser.get("/console/users").await;
    assert!(users.body.contains("data-email=\"member@example.test\""), "{}", users.body);
    let email = ("email", "member@example.test");
    assert_eq!(browser.post("/console/users/plan", &[("csrf", &csrf), email, ("plan", "team")]).await.status, 303);
    let me: Value = h.http.get(h.url("/me")).bearer_auth(&user_token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["plan"], "team");
    assert_eq!(browser.post("/console/users/plan", &[("csrf", &csrf), email, ("plan", "nope")]).await.status, 422);

    // Role, disable and enable, revoke tokens.
    assert_eq!(browser.post("/console/users/role", &[("csrf", &csrf), email, ("role", "admin")]).await.status, 303);
    let me: Value = h.http.get(h.url("/me")).bearer_auth(&user_token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["role"], "admin");
    browser.post("/console/users/role", &[("csrf", &csrf), email, ("role", "user")]).await;
    assert_eq!(browser.post("/console/users/disabled", &[("csrf", &csrf), email, ("disabled", "1")]).await.status, 303);
    let me = h.http.get(h.url("/me")).bearer_auth(&user_token).send().await.unwrap();
    assert_eq!(me.status(), 403, "disabled");
    browser.post("/console/users/disabled", &[("csrf", &csrf), email, ("disabled", "0")]).await;
    assert_eq!(h.http.get(h.url("/me")).bearer_auth(&user_token).send().await.unwrap().status(), 200);
    assert_eq!(browser.post("/console/users/revoke", &[email]).await.status, 403, "no CSRF token");
    assert_eq!(browser.post("/console/users/revoke", &[("csrf", &csrf), email]).await.status, 303);
    assert_eq!(h.http.get(h.url("/me")).bearer_auth(&user_token).send().await.unwrap().status(), 401);
    let ghost = ("email", "ghost@example.test");
    assert_eq!(browser.post("/console/users/revoke", &[("csrf", &csrf), ghost]).await.status, 404);
    // An admin cannot lock themselves out from the console.
    let me_admin = ("email", ADMIN_EMAIL);
    assert_eq!(
        browser.post("/console/users/disabled", &[("csrf", &csrf), me_admin, ("disabled", "1")]).await.status,
        422
    );
}
