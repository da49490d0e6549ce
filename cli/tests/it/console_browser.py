"""The console in a real browser (headless Chromium through Selenium), driven by
cli/tests/it/console_browser.rs against a real ant-server, with `ant` for the client side.

Environment: CONSOLE_URL (the server's base URL), ADMIN_EMAIL/ADMIN_PASSWORD,
USER_EMAIL/USER_PASSWORD, ANT (the `ant` binary; ANIATE_HOME and ANIATE_SERVER are set for
it), SCREENSHOTS (a directory), CHROMEDRIVER (optional path).
Exits non-zero with a message on the first check that fails.
"""

import json
import os
import subprocess
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["CONSOLE_URL"].rstrip("/")
SHOTS = os.environ["SCREENSHOTS"]
PROMPT_ONE = "BROWSER-PROMPT-MARKER answer as a haiku.\nKeep it short."
PROMPT_TWO = "BROWSER-PROMPT-MARKER answer as a haiku.\nKeep it very short."
MARKER = "BROWSER-PROMPT-MARKER"


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def ant(*args):
    result = subprocess.run([os.environ["ANT"], *args], capture_output=True, text=True, timeout=60)
    check(result.returncode == 0, f"ant {' '.join(args)}: {result.stderr}")
    return result.stdout


def public_tool(slug):
    import urllib.request
    import urllib.error

    try:
        with urllib.request.urlopen(f"{BASE}/tools/{slug}") as response:
            return json.load(response)
    except urllib.error.HTTPError:
        return None


def new_browser():
    options = webdriver.ChromeOptions()
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"]:
        options.add_argument(arg)
    driver = os.environ.get("CHROMEDRIVER")
    service = Service(executable_path=driver) if driver else Service()
    browser = webdriver.Chrome(options=options, service=service)
    browser.set_page_load_timeout(30)
    browser.implicitly_wait(5)
    return browser


def shot(browser, name):
    browser.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def sign_in(browser, email, password):
    browser.get(f"{BASE}/console")
    check("/console/login" in browser.current_url, f"signed out, /console leads to sign-in: {browser.current_url}")
    browser.find_element(By.NAME, "email").send_keys(email)
    browser.find_element(By.NAME, "password").send_keys(password)
    before = browser.current_url
    browser.find_element(By.CSS_SELECTOR, "form[action='/console/login'] button[type=submit]").click()
    WebDriverWait(browser, 20).until(lambda b: b.current_url != before)


def submit(browser, css, url_part):
    """Clicks a form's button and waits for the page the post leads to (a click does not wait)."""
    browser.find_element(By.CSS_SELECTOR, css).click()
    try:
        WebDriverWait(browser, 20).until(expected_conditions.url_contains(url_part))
    except Exception:
        check(False, f"after {css}: expected {url_part}, at {browser.current_url}")


def wait_for_text(browser, text):
    try:
        WebDriverWait(browser, 20).until(lambda b: text in b.page_source)
    except Exception:
        check(False, f"{text!r} never appeared on {browser.current_url}")


def fill(browser, name, text):
    field = browser.find_element(By.NAME, name)
    field.clear()
    field.send_keys(text)


def main():
    admin = new_browser()
    try:
        # Sign in as admin.
        sign_in(admin, os.environ["ADMIN_EMAIL"], os.environ["ADMIN_PASSWORD"])
        check(admin.current_url.endswith("/console/tools"), f"admins land on tools: {admin.current_url}")
        shot(admin, "tools")

        # Push a tool.
        submit(admin, "a[href='/console/tools/new']", "/console/tools/new")
        fill(admin, "slug", "haiku")
        fill(admin, "name", "Haiku")
        fill(admin, "description", "Answers in a haiku")
        fill(admin, "system_prompt", PROMPT_ONE)
        fill(admin, "message", "first version")
        shot(admin, "new-tool")
        submit(admin, "#tool-form button[type=submit]", "/console/tools/haiku/history")
        tool = public_tool("haiku")
        check(tool is not None and tool["version"] == 1, f"GET /tools/haiku: {tool}")
        check("system_prompt" not in tool, "no prompt in /tools")
        market = ant("marketplace")
        check("haiku" in market, f"ant marketplace lists haiku: {market}")
        ant("install", "haiku")

        # Edit its prompt.
        admin.get(f"{BASE}/console/tools/haiku")
        area = admin.find_element(By.NAME, "system_prompt")
        check(area.get_attribute("value").replace("\r\n", "\n") == PROMPT_ONE, "the prompt is in the text area")
        fill(admin, "system_prompt", PROMPT_TWO)
        fill(admin, "message", "shorter")
        submit(admin, "#tool-form button[type=submit]", "/history")
        check(public_tool("haiku")["version"] == 2, "the edit is version 2")

        # The diff between versions 1 and 2.
        admin.find_element(By.CSS_SELECTOR, "input[name=from][value='1']").click()
        admin.find_element(By.CSS_SELECTOR, "input[name=to][value='2']").click()
        shot(admin, "history")
        submit(admin, "form[action$='/diff'] button[type=submit]", "/console/tools/haiku/diff")
        changed = admin.find_elements(By.CSS_SELECTOR, "#prompt-diff tr.changed")
        check(len(changed) == 1, f"one changed line, got {len(changed)}")
        check("Keep it short." in changed[0].find_element(By.CSS_SELECTOR, "td.old").text, "old line on the left")
        check("Keep it very short." in changed[0].find_element(By.CSS_SELECTOR, "td.new").text, "new line on the right")
        shot(admin, "diff")

        # Roll back, with a confirmation.
        admin.get(f"{BASE}/console/tools/haiku/history")
        submit(admin, "tr[data-version='1'] a.rollback", "version=1")
        shot(admin, "rollback-confirm")
        submit(admin, "#rollback-form button[type=submit]", "/history")
        tool = public_tool("haiku")
        check(tool["version"] == 3, f"the rollback is version 3: {tool}")
        update = ant("update")
        check("haiku" in update and "v3" in update, f"ant update gets the rollback: {update}")
        installed = json.load(open(os.path.join(os.environ["ANIATE_HOME"], "tools", "haiku.json")))
        check(installed["version"] == 3, f"installed: {installed}")

        # A form posted without its CSRF token is refused.
        admin.get(f"{BASE}/console/tools")
        admin.execute_script(
            "document.querySelectorAll(\"tr[data-slug='haiku'] input[name=csrf]\").forEach(e => e.remove());"
        )
        admin.find_element(By.CSS_SELECTOR, "tr[data-slug='haiku'] form button").click()
        wait_for_text(admin, "CSRF")
        check(public_tool("haiku") is not None, "the tool is still active")

        # Usage: as many chart points as days with usage.
        ant("haiku", "-i", "autumn")
        admin.get(f"{BASE}/console/usage")
        days = admin.find_elements(By.CSS_SELECTOR, "#by-day tbody tr")
        for chart in ["chart-requests", "chart-tokens", "chart-errors"]:
            points = admin.find_elements(By.CSS_SELECTOR, f"#{chart} circle.point")
            check(len(days) >= 1 and len(points) == len(days), f"{chart}: {len(points)} points for {len(days)} days")
        shot(admin, "usage")
    finally:
        admin.quit()

    user = new_browser()
    try:
        sign_in(user, os.environ["USER_EMAIL"], os.environ["USER_PASSWORD"])
        check(user.current_url.endswith("/console/me"), f"users land on their usage: {user.current_url}")
        shot(user, "my-usage")
        pages = [f"{BASE}/console/me", f"{BASE}/console/tokens"]
        admin_pages = [
            f"{BASE}/console/tools",
            f"{BASE}/console/tools/haiku",
            f"{BASE}/console/tools/haiku/history",
            f"{BASE}/console/tools/haiku/diff?from=1&to=2",
            f"{BASE}/console/usage",
        ]
        for page in pages + admin_pages:
            user.get(page)
            check(MARKER not in user.page_source, f"a prompt on {page}")
        for page in admin_pages:
            user.get(page)
            status = user.execute_script(
                "return performance.getEntriesByType('navigation')[0].responseStatus || 0;"
            )
            check(status in (403, 0) and "Admins only" in user.page_source, f"{page} is 403 for a user: {status}")
        user.get(f"{BASE}/console/tokens")
        fill(user, "name", "laptop")
        user.find_element(By.CSS_SELECTOR, "#new-token-form button").click()
        wait_for_text(user, 'id="new-token"')
        check(user.find_element(By.ID, "new-token").text.startswith("ant_"), "a new token, shown once")
        shot(user, "tokens")
    finally:
        user.quit()
    print("console browser test passed")


if __name__ == "__main__":
    main()
