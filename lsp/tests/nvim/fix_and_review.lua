-- Neovim (0.7+) drives ant-lsp like a user would: it starts the server through vim.lsp,
-- opens a buggy file, picks "Aniate: fix" from vim.lsp.buf.code_action() (Neovim resolves
-- the action and applies its edit), then picks "Aniate: review" (Neovim executes its
-- command; the findings arrive as diagnostics).
--
-- Environment: ANT_LSP_EXE (the server), ANT_LSP_TEST_FILE (the buggy file),
-- ANT_LSP_TEST_EXPECTED (the fixed content), ANT_LSP_TEST_OUT (where the log is written).
-- Exits 0 when every check passed, 1 otherwise.

local out_path = os.getenv('ANT_LSP_TEST_OUT')
local log_lines = {}

local function log(message)
  table.insert(log_lines, message)
end

local function finish(ok)
  log(ok and 'PASS' or 'FAIL')
  local file = io.open(out_path, 'w')
  if file then
    file:write(table.concat(log_lines, '\n') .. '\n')
    file:close()
  end
  if ok then
    vim.cmd('qall!')
  else
    vim.cmd('cquit! 1')
  end
end

local function buffer_text(bufnr)
  return table.concat(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false), '\n') .. '\n'
end

-- Answers vim.ui.select (the code action menu) with the item titled `title`.
local function choose(title)
  vim.ui.select = function(items, _, on_choice)
    local titles = {}
    for index, item in ipairs(items) do
      -- 0.7 passes {client_id, action} tuples; later versions pass {ctx, action}.
      local action = item[2] or item.action or item
      table.insert(titles, action.title)
      if action.title == title then
        log('chose ' .. title)
        on_choice(item, index)
        return
      end
    end
    error('no "' .. title .. '" among the code actions: ' .. vim.inspect(titles))
  end
end

local function run()
  local file = os.getenv('ANT_LSP_TEST_FILE')
  local expected = os.getenv('ANT_LSP_TEST_EXPECTED')
  vim.cmd('edit ' .. vim.fn.fnameescape(file))
  vim.bo.filetype = 'python'
  local bufnr = vim.api.nvim_get_current_buf()

  local initialized = false
  local client_id = vim.lsp.start_client({
    name = 'ant-lsp',
    cmd = { os.getenv('ANT_LSP_EXE') },
    root_dir = vim.fn.fnamemodify(file, ':h'),
    on_init = function()
      initialized = true
    end,
  })
  assert(client_id, 'vim.lsp.start_client failed')
  vim.lsp.buf_attach_client(bufnr, client_id)
  assert(vim.wait(20000, function() return initialized end, 20), 'ant-lsp did not initialize')
  log('initialized')

  -- Fix: Neovim lists the actions, resolves the one chosen, and applies its edit.
  vim.api.nvim_win_set_cursor(0, { 1, 0 })
  choose('Aniate: fix')
  vim.lsp.buf.code_action()
  local fixed = vim.wait(30000, function() return buffer_text(bufnr) == expected end, 50)
  assert(fixed, 'the buffer was not fixed; it reads:\n' .. buffer_text(bufnr))
  log('fixed: ' .. vim.inspect(buffer_text(bufnr)))

  -- Review: Neovim executes the action's command; the findings come back as diagnostics.
  choose('Aniate: review')
  vim.lsp.buf.code_action()
  local reviewed = vim.wait(30000, function() return #vim.diagnostic.get(bufnr) == 2 end, 50)
  local diagnostics = vim.diagnostic.get(bufnr)
  assert(reviewed, 'expected 2 diagnostics, got ' .. vim.inspect(diagnostics))
  table.sort(diagnostics, function(a, b) return a.lnum < b.lnum end)
  local first, second = diagnostics[1], diagnostics[2]
  assert(first.lnum == 1 and first.severity == vim.diagnostic.severity.HINT, vim.inspect(first))
  assert(first.source == 'aniate', vim.inspect(first))
  assert(second.lnum == 2 and second.col == 0 and second.end_col == 16, vim.inspect(second))
  assert(second.severity == vim.diagnostic.severity.WARN, vim.inspect(second))
  assert(second.message == 'returns the sum', vim.inspect(second))
  log('diagnostics: ' .. vim.inspect(diagnostics))

  vim.lsp.stop_client(client_id)
  vim.wait(3000, function() return vim.lsp.get_client_by_id(client_id) == nil end, 20)
end

local ok, err = pcall(run)
if not ok then
  log('error: ' .. tostring(err))
end
finish(ok)
