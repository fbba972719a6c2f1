"""Our own benign set: realistic API traffic (JSON with prose, code snippets, e-mail
addresses, URLs, names with apostrophes, markdown, base64 blobs, browser headers). The
issue's bar: under 0.1% blocked, so with 1,200 requests at most one may be refused."""

from __future__ import annotations

import base64
import json
import random

import pytest

from tests.filters.waf.conftest import run

NAMES = [
    "Ann O'Neil",
    "D'Angelo Russo",
    "Zoë Ångström",
    "Jean-Luc Picard",
    'Bob "Bobby" Tables',
    "Mary-Kate O'Brien",
    "Nuño Peña",
    "李小龍",
    "Renée Zellweger",
    "Conan O'Brien",
]
PROSE = [
    "I ordered two pairs but only one arrived; could you check the status?",
    "Great product!!! Would buy again :) 5/5",
    "Select the size you want from the drop-down and click 'Add to cart'.",
    "We're open Mon-Fri, 9am-5pm (closed on public holidays).",
    "The union meeting is at 3pm — please bring your ID & badge.",
    "Price: $19.99 (was $29.99) - save 33%!",
    "Delete my account, please. I don't use it any more.",
    "Can you update the shipping address to 221B Baker Street, London?",
    "It's 100% cotton & machine-washable at 40°C.",
    "Drop me a line at support@example.com or call +1 (555) 010-9999.",
    "Where is my order #12345? It's been 2 weeks...",
    "Use the coupon code SAVE-20 at checkout; it expires 2025-12-31.",
    "I'd like to exchange the blue one for the red one, if that's OK.",
    "Order by 1 pm and it ships the same day; otherwise next business day.",
    "Is there a cheaper plan than Pro? Or a discount for non-profits?",
]
CODE = [
    "```python\nfor item in items:\n    print(item.name)\n```",
    'Use `git commit -m "fix: typo"` and then `git push`.',
    "const total = items.reduce((sum, i) => sum + i.price, 0);",
    "SELECT-style filters are configured in the dashboard, not via the API.",
    "In the config set `timeout: 30s` and `retries: 3`.",
    "Call `GET /api/v1/orders?page=2` to get the next page.",
    "The regex ^[a-z0-9_-]{3,16}$ validates usernames.",
    "x = [n * 2 for n in range(10) if n % 2 == 0]",
]
MARKDOWN = [
    "# Release notes\n\n- Faster search\n- **Bold** fixes\n\n> Thanks to all contributors!",
    "## FAQ\n1. *Can I cancel?* Yes.\n2. [Docs](https://docs.example.com/faq#cancel)",
    "| Plan | Price |\n|------|-------|\n| Pro  | $10   |",
]
URLS = [
    "https://example.com/products/42?ref=newsletter&utm_source=email",
    "https://cdn.example.net/img/hero.jpg",
    "http://localhost.example.org/health",
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    "mailto:sales@example.com",
]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
    "curl/8.5.0",
    "PostmanRuntime/7.39.0",
]


def _requests(count: int) -> list[dict]:
    rng = random.Random(20261202)
    out = []
    for i in range(count):
        blob = base64.b64encode(rng.randbytes(rng.randint(16, 300))).decode()
        doc = {
            "id": rng.randint(1, 10**9),
            "customer": {
                "name": rng.choice(NAMES),
                "email": f"user{i}.{rng.choice(['x', 'o-k'])}@example.com",
            },
            "message": rng.choice(PROSE) + " " + rng.choice(PROSE),
            "notes": rng.choice(CODE + MARKDOWN),
            "link": rng.choice(URLS),
            "attachment": {"filename": f"scan-{i}.pdf", "data": blob},
            "tags": rng.sample(["vip", "new", "returning", "b2b", "gift", "rush"], 3),
            "rating": rng.random() * 5,
        }
        kind = i % 4
        headers = [
            ("User-Agent", rng.choice(AGENTS)),
            ("Accept", "application/json, text/plain, */*"),
            ("Accept-Language", "en-US,en;q=0.9,de;q=0.8"),
            ("Accept-Encoding", "gzip, deflate, br"),
            (
                "Authorization",
                "Bearer " + base64.urlsafe_b64encode(rng.randbytes(48)).decode().rstrip("="),
            ),
            ("Referer", rng.choice(URLS)),
            ("Cookie", f"session={blob[:32]}; theme=dark; consent=analytics%3Dno%26ads%3Dno"),
        ]
        if kind == 0:
            out.append(
                {
                    "target": f"/api/v1/tickets/{i}/comments",
                    "method": "POST",
                    "headers": headers,
                    "body": json.dumps(doc),
                    "content_type": "application/json",
                }
            )
        elif kind == 1:
            from urllib.parse import urlencode

            query = urlencode(
                {
                    "q": rng.choice(PROSE)[:60],
                    "page": rng.randint(1, 9),
                    "sort": "-created_at",
                    "email": doc["customer"]["email"],
                    "next": rng.choice(URLS),
                }
            )
            out.append({"target": f"/api/v1/search?{query}", "method": "GET", "headers": headers})
        elif kind == 2:
            from urllib.parse import urlencode

            form = urlencode(
                {"name": doc["customer"]["name"], "message": doc["message"], "notes": doc["notes"]}
            )
            out.append(
                {
                    "target": "/contact",
                    "method": "POST",
                    "headers": headers,
                    "body": form,
                    "content_type": "application/x-www-form-urlencoded",
                }
            )
        else:
            out.append(
                {
                    "target": f"/api/v1/users/{doc['id']}/avatar/{doc['attachment']['filename']}",
                    "method": "GET",
                    "headers": headers,
                }
            )
    return out


@pytest.fixture(scope="module")
def outcomes(default_waf):
    refused = []
    requests = _requests(1200)
    for req in requests:
        reply, _ = run(
            default_waf,
            req["target"],
            method=req["method"],
            headers=req["headers"],
            body=req.get("body", b""),
            content_type=req.get("content_type"),
        )
        if reply is not None:
            refused.append(
                (req["target"][:80], [(v.rule_id, v.location) for v in reply.violations])
            )
    return len(requests), refused


def test_realistic_api_traffic_false_positive_rate_under_0_1_percent(outcomes):
    total, refused = outcomes
    assert total == 1200
    assert len(refused) <= 1, refused[:5]
