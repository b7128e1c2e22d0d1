"""The hostile half of benches/soak.sh: until DURATION seconds pass, sends in
turn a stream it abandons after the first bytes, malformed bodies, a bad API
key, an over-long prompt and a request for too many choices, and checks that
each answer is what a serving engine owes it (an OpenAI-shaped error with the
right status, or a stream). Prints one JSON line of counts by kind.

Usage: soak_abuse.py URL API_KEY DURATION_SECS
"""

import http.client
import json
import sys
import time
import urllib.parse

url, key, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
parsed = urllib.parse.urlparse(url)
counts = {}
problems = []


def count(kind):
    counts[kind] = counts.get(kind, 0) + 1


def post(body, api_key=key, read=True):
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    conn.request("POST", "/v1/completions", body=body, headers=headers)
    response = conn.getresponse()
    if not read:
        return conn, response
    data = response.read()
    conn.close()
    return response.status, data


def expect_error(kind, status_wanted, body, api_key=key):
    try:
        status, data = post(body, api_key)
    except Exception as e:  # a reset or a hang is a failure of the server
        problems.append(f"{kind}: {e!r}")
        count(f"{kind}: connection error")
        return
    try:
        error = json.loads(data)["error"]
        shaped = error["code"] == status and isinstance(error["message"], str)
    except Exception:
        shaped = False
    if status == status_wanted and shaped:
        count(f"{kind}: {status}")
    elif status == 503 and shaped:
        count(f"{kind}: 503 (overloaded first)")
    else:
        problems.append(f"{kind}: got {status} {data[:200]!r}")
        count(f"{kind}: unexpected {status}")


def abandoned_stream():
    body = json.dumps(
        {"prompt": "Problem: start with 2 5 , add 1 3 . What is the result ?\n\n", "max_tokens": 200, "ignore_eos": True, "stream": True}
    )
    try:
        conn, response = post(body, read=False)
        if response.status == 200:
            response.read(64)
            count("abandoned stream: 200, closed after 64 bytes")
        else:
            response.read()
            count(f"abandoned stream: {response.status}")
        conn.close()
    except Exception as e:
        problems.append(f"abandoned stream: {e!r}")
        count("abandoned stream: connection error")


deadline = time.time() + duration
while time.time() < deadline:
    abandoned_stream()
    expect_error("malformed JSON", 400, b'{"prompt": "add 1 3", "max_tokens": ')
    expect_error("wrong type", 400, json.dumps({"prompt": 7, "max_tokens": "x"}))
    expect_error("bad key", 401, json.dumps({"prompt": "add 1 3"}), api_key="sk-wrong")
    expect_error("over-long prompt", 400, json.dumps({"prompt": "add 1 3 , " * 400}))
    expect_error(
        "too many choices", 400, json.dumps({"prompt": ["add"] * 100, "n": 16})
    )
    time.sleep(0.05)

print(json.dumps({"counts": counts, "problems": problems[:20]}))
