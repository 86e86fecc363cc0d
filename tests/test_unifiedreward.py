"""The UnifiedReward reward against a fake OpenAI-compatible server on loopback: the request it sends, the
score it parses, retries on timeouts / 5xx / replies without a score, failing at once on 4xx, and an
API key that never shows in an error."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

import elborl.rewards.unifiedreward as ur
from elborl.config import RewardsConfig, UnifiedRewardConfig
from elborl.errors import UserError
from elborl.rewards.registry import REWARDS, RewardContext, RewardError, RewardMix
from tests.helpers.servers import free_port

SECRET = "sk-test-SECRET-123"
KEY_ENV = "ELBORL_TEST_UNIFIEDREWARD_KEY"
HANG = object()  # a response that never comes (the client times out)
TIMEOUT = 0.3


class Fake:
    """A fake /v1/chat/completions: `respond(attempt number, request json, headers)` -> (status, body) or HANG."""

    def __init__(self, respond: Callable, delay: float = 0.0):
        self.respond, self.delay = respond, delay
        self.requests: list[tuple[dict, dict]] = []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.release = threading.Event()
        self.url = ""

    @property
    def count(self) -> int:
        return len(self.requests)


@contextmanager
def serve(respond: Callable, delay: float = 0.0) -> Iterator[Fake]:
    fake = Fake(respond, delay)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with fake.lock:
                fake.requests.append((dict(self.headers), body))
                n = fake.count
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                if self.path != "/v1/chat/completions":
                    answer = (404, {"error": {"message": f"no route {self.path}"}})
                else:
                    answer = fake.respond(n, body, dict(self.headers))
                time.sleep(fake.delay)
                if answer is HANG:
                    fake.release.wait(10)
                    return
                status, payload = answer
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up
            finally:
                with fake.lock:
                    fake.in_flight -= 1

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()


def completion(text: str) -> tuple[int, dict]:
    return 200, {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": text}}]}


def build(url: str | None, **kw):
    cfg = UnifiedRewardConfig(url=url, **{"timeout": TIMEOUT, "retries": 3, **kw})
    return REWARDS["unifiedreward"](RewardContext(settings=RewardsConfig(unifiedreward=cfg)))


def batch(n: int = 2, h: int = 24, w: int = 40) -> tuple[np.ndarray, list[dict]]:
    images = np.random.default_rng(0).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    return images, [{"prompt": f"a photo of {i} red cubes", "tag": "counting"} for i in range(n)]


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setattr(ur, "_BACKOFF_S", 0.01)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture
def key(monkeypatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


def test_request_shape_and_score(key):
    images, meta = batch(3)
    with serve(lambda n, body, headers: completion("Alignment is good, quality is fine.\nFinal Score: 4.0")) as fake:
        result = build(fake.url, api_key_env=KEY_ENV, model="UnifiedReward-7b-v1.5", max_tokens=77)(images, meta)
    np.testing.assert_allclose(result.scores, [0.8, 0.8, 0.8])
    assert result.details == [{"reply": "Alignment is good, quality is fine.\nFinal Score: 4.0"}] * 3
    assert fake.count == 3
    seen = set()
    for headers, body in fake.requests:
        assert headers["Authorization"] == f"Bearer {SECRET}"
        assert body["model"] == "UnifiedReward-7b-v1.5"
        assert body["max_tokens"] == 77 and body["temperature"] == 0
        (message,) = body["messages"]
        assert message["role"] == "user"
        image_part, text_part = message["content"]
        assert image_part["type"] == "image_url" and text_part["type"] == "text"
        prefix = "data:image/png;base64,"
        assert image_part["image_url"]["url"].startswith(prefix)
        png = Image.open(io.BytesIO(base64.b64decode(image_part["image_url"]["url"][len(prefix) :])))
        assert png.format == "PNG" and png.size == (40, 24)
        i = next(i for i, m in enumerate(meta) if f"Text Caption: [{m['prompt']}]" in text_part["text"])
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), images[i])
        assert text_part["text"] == ur.instruction(meta[i]["prompt"])
        assert "assign a score from 1 to 5 after 'Final Score:'" in text_part["text"]
        seen.add(i)
    assert seen == {0, 1, 2}


def test_no_key_no_authorization_header():
    with serve(lambda n, body, headers: completion("Final Score: 3")) as fake:
        result = build(fake.url + "/")(*batch(1))  # a trailing slash is fine
    assert result.scores.tolist() == [pytest.approx(0.6)]
    assert "Authorization" not in fake.requests[0][0]


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Final Score: 4.0", 0.8),
        ("Final Score: 3", 0.6),
        ("Final Score:2.5", 0.5),
        ("The caption matches.\nFinal Score:  5", 1.0),
        ("Final Score: 1.25; later Final Score: 4", 0.25),  # the first match, like the peer
        ("final score: 2.5", None),  # the peer's pattern is case-sensitive
        ("Final Score: 0", None),  # outside 1..5
        ("Final Score: four", None),
        ("It looks nice.", None),
    ],
)
def test_parse_score(reply, score):
    assert ur.parse_score(reply) == (None if score is None else pytest.approx(score))


def test_scores_follow_their_images_under_bounded_concurrency():
    def respond(n, body, headers):
        text = body["messages"][0]["content"][1]["text"]
        i = int(text.split("a photo of ")[1].split()[0])
        return completion(f"Final Score: {i % 5 + 1}")

    images, meta = batch(6)
    with serve(respond, delay=0.1) as fake:
        result = build(fake.url, concurrency=2)(images, meta)
    np.testing.assert_allclose(result.scores, [(i % 5 + 1) / 5 for i in range(6)])
    assert fake.count == 6 and fake.max_in_flight == 2


def test_retries_after_a_timeout():
    with serve(lambda n, body, headers: HANG if n == 1 else completion("Final Score: 2")) as fake:
        result = build(fake.url)(*batch(1))
    assert result.scores.tolist() == [pytest.approx(0.4)]
    assert fake.count == 2


def test_retries_after_a_5xx():
    def respond(n, body, headers):
        return (503, {"error": {"message": "warming up"}}) if n == 1 else completion("Final Score: 5")

    with serve(respond) as fake:
        result = build(fake.url)(*batch(1))
    assert result.scores.tolist() == [pytest.approx(1.0)] and fake.count == 2


def test_always_timing_out_fails_after_the_retries():
    start = time.perf_counter()
    with serve(lambda n, body, headers: HANG) as fake, pytest.raises(RewardError) as err:
        build(fake.url, retries=3)(*batch(1))
    assert fake.count == 3
    assert time.perf_counter() - start < 3 * TIMEOUT + 2
    message = str(err.value)
    assert "unifiedreward" in message and f"{fake.url}/chat/completions" in message
    assert "3 attempt(s)" in message and "timeout" in message


def test_server_down():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(RewardError) as err:
        build(url, retries=2)(*batch(1))
    message = str(err.value)
    assert "unifiedreward" in message and f"{url}/chat/completions" in message and "cannot connect" in message


def test_4xx_fails_at_once_with_the_servers_message():
    answer = (400, {"error": {"message": "model 'nope' not found"}})
    with serve(lambda n, body, headers: answer) as fake, pytest.raises(RewardError) as err:
        build(fake.url, model="nope")(*batch(1))
    assert fake.count == 1
    message = str(err.value)
    assert "unifiedreward" in message and "HTTP 400" in message and "model 'nope' not found" in message


def test_reply_without_a_score_is_retried_then_fails():
    reply = "The image shows three red cubes on a table, well lit. " * 5
    with serve(lambda n, body, headers: completion(reply)) as fake, pytest.raises(RewardError) as err:
        build(fake.url, retries=2)(*batch(1))
    assert fake.count == 2
    message = str(err.value)
    assert "unifiedreward" in message and "image 0" in message and "The image shows three red cubes" in message
    assert len(message) < 600


def test_reply_without_a_score_then_with_one():
    with serve(lambda n, body, headers: completion("Hmm." if n == 1 else "Final Score: 3.5")) as fake:
        result = build(fake.url)(*batch(1))
    assert result.scores.tolist() == [pytest.approx(0.7)] and fake.count == 2


def _echo(kind):
    """Servers that put the request's Authorization header into what they answer."""

    def respond(n, body, headers):
        auth = headers.get("Authorization", "")
        if kind == "hang":
            return HANG
        if kind == "401":
            return 401, {"error": {"message": f"invalid key {auth}"}}
        if kind == "500":
            return 500, f"internal error handling {auth}"
        if kind == "noscore":
            return completion(f"I was called with {auth} and will not score.")
        return completion(f"{auth} Final Score: 4")

    return respond


@pytest.mark.parametrize("kind", ["hang", "401", "500", "noscore", "down"])
def test_the_key_never_shows_in_errors(key, kind):
    if kind == "down":
        with pytest.raises(RewardError) as err:
            build(f"http://127.0.0.1:{free_port()}/v1", api_key_env=KEY_ENV, retries=2)(*batch(1))
    else:
        with serve(_echo(kind)) as fake, pytest.raises(RewardError) as err:
            build(fake.url, api_key_env=KEY_ENV, retries=2)(*batch(1))
        assert fake.requests[0][0]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in str(err.value) and SECRET not in repr(err.value.args)
    assert "SECRET" not in str(err.value)
    if kind in ("401", "500", "noscore"):
        assert "Bearer ***" in str(err.value)


def test_the_key_never_shows_in_details(key):
    with serve(_echo("ok")) as fake:
        result = build(fake.url, api_key_env=KEY_ENV)(*batch(1))
    assert result.scores.tolist() == [pytest.approx(0.8)] and fake.count == 1
    assert SECRET not in result.details[0]["reply"]


def test_factory_needs_a_url():
    with pytest.raises(UserError, match=r"rewards\.unifiedreward\.url"):
        build(None)
    with pytest.raises(RewardError, match=r"reward 'unifiedreward'.*rewards\.unifiedreward\.url"):
        RewardMix("unifiedreward", RewardContext(settings=RewardsConfig()))


def test_factory_needs_the_key_variable(monkeypatch):
    with pytest.raises(UserError) as err:
        build("http://127.0.0.1:1/v1", api_key_env=KEY_ENV)
    assert KEY_ENV in str(err.value) and "not set" in str(err.value)
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(UserError, match="is empty"):
        build("http://127.0.0.1:1/v1", api_key_env=KEY_ENV)


def test_metadata_needs_prompts():
    images, _ = batch(2)
    with pytest.raises(RewardError, match="metadata row 1"):
        build("http://127.0.0.1:1/v1")(images, [{"prompt": "a"}, {"tag": "x"}])
    with pytest.raises(RewardError, match="2 images but 1 metadata rows"):
        build("http://127.0.0.1:1/v1")(images, [{"prompt": "a"}])
