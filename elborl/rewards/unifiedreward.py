"""UnifiedReward as a training reward: a vision-language judge behind an OpenAI-compatible chat endpoint.

The model (e.g. CodeGoat24/UnifiedReward-7b-v1.5) is served by sglang or vLLM; its point-score mode is
asked, once per image, to rate how well the image matches its caption and how good it looks, and it
answers with free text ending in "Final Score: x" (x from 1 to 5). The reward is x / 5, so in [0.2, 1].

Request and parsing follow FlowGRPO's `unifiedreward_score_sglang` (yifan123/flow_grpo,
flow_grpo/rewards.py; the same code in NVlabs/DiffusionNFT, flow_grpo/rewards.py and
flow_grpo/unifiedreward_scorer.py): one user message with the image as a base64 PNG data URL and the
instruction text below, temperature 0; the score is the first match of the case-sensitive
`Final Score:\\s*([1-5](?:\\.\\d+)?)`, divided by 5. Where ours differs:
- The peer scores a reply without a match as 0 (a silent, plausible-looking reward). Here such a reply
  is asked again, like a failed request, and after `retries` attempts the reward fails with
  `RewardError` naming the image and quoting the reply.
- The peer resizes every image to 512 x 512 before encoding; we send the image as generated.
- The peer's data URL says `data:image;base64,`; ours names the type, `data:image/png;base64,`.
- Timeouts, bounded retries with backoff and bounded concurrency (the peer fires all requests at once
  through the openai client and retries per its defaults).

Failures: timeouts, refused or dropped connections and HTTP 5xx are retried (`retries` attempts per
image in all, short exponential backoff), then `RewardError` names the reward and the endpoint; an
HTTP 4xx fails at once with the status and the server's message. The API key (read from the variable
named by `api_key_env`) is sent only as `Authorization: Bearer ...` and is scrubbed from every message.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import http.client
import io
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from elborl.errors import UserError
from elborl.rewards.registry import RewardContext, RewardError, RewardFn, RewardResult

if TYPE_CHECKING:
    from elborl.config import UnifiedRewardConfig

NAME = "unifiedreward"

#: UnifiedReward's point-score instruction for text-to-image (FlowGRPO's `unifiedreward_score_sglang`),
#: `{prompt}` = the caption. The leading "<image>" is the LLaVA placeholder the peer also sends.
INSTRUCTION = (
    "<image>\n"
    "You are given a text caption and a generated image based on that caption. "
    "Your task is to evaluate this image based on two key criteria:\n"
    "1. Alignment with the Caption: Assess how well this image aligns with the provided caption. "
    "Consider the accuracy of depicted objects, their relationships, and attributes as described in the caption.\n"
    "2. Overall Image Quality: Examine the visual quality of this image, including clarity, detail preservation, "
    "color accuracy, and overall aesthetic appeal.\n"
    "Based on the above criteria, assign a score from 1 to 5 after 'Final Score:'.\n"
    "Your task is provided as follows:\n"
    "Text Caption: [{prompt}]"
)

#: The peer's score pattern (case-sensitive, first match, 1 to 5 with optional decimals).
SCORE_PATTERN = re.compile(r"Final Score:\s*([1-5](?:\.\d+)?)")
#: The score's scale: reward = score / MAX_SCORE.
MAX_SCORE = 5.0

#: Seconds before the 2nd attempt; doubled for each later one, capped at _BACKOFF_CAP_S.
_BACKOFF_S = 0.5
_BACKOFF_CAP_S = 8.0
#: Characters of a reply kept in details and quoted in errors.
_REPLY_CHARS = 200
_EXCERPT_CHARS = 120


class _Transient(Exception):
    """A failure worth another attempt (timeout, connection, 5xx, a reply without a score)."""


class _Fatal(Exception):
    """A failure another attempt will not fix (HTTP 4xx)."""


def instruction(prompt: str) -> str:
    """The text sent with each image."""
    return INSTRUCTION.format(prompt=prompt)


def parse_score(reply: str) -> float | None:
    """The reward in a reply: the number after the first "Final Score:" divided by 5; None without one."""
    match = SCORE_PATTERN.search(reply)
    return float(match.group(1)) / MAX_SCORE if match else None


def png_data_url(image: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as a `data:image/png;base64,...` URL."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _excerpt(text: str, n: int = _EXCERPT_CHARS) -> str:
    text = " ".join(str(text).split())
    return repr(text if len(text) <= n else text[:n] + "...")


def _server_message(text: str) -> str:
    """The error message in an OpenAI-style error body ({"error": {"message": ...}}), else the raw text."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if data.get("message"):
            return str(data["message"])
    return text


def _reply_text(body: str) -> str:
    """choices[0].message.content of a chat completion (text parts joined if it is a list)."""
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Transient(f"not a chat completion: {_excerpt(body)}") from None
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise _Transient(f"no text in the reply: {_excerpt(json.dumps(content))}")
    return content


def _check(cfg: UnifiedRewardConfig) -> tuple[str, str | None]:
    """(the chat-completions endpoint, the API key or None), or a `UserError` naming the setting."""
    if not cfg.url:
        raise UserError(
            "rewards.unifiedreward.url: expected the base URL of an OpenAI-compatible endpoint serving "
            "UnifiedReward (e.g. http://127.0.0.1:30000/v1), found none"
        )
    if not re.match(r"https?://[^/]", cfg.url):
        raise UserError(f"rewards.unifiedreward.url: expected an http:// or https:// URL, found {cfg.url!r}")
    key = None
    if cfg.api_key_env:
        key = os.environ.get(cfg.api_key_env)
        if not key:
            state = "is empty" if key is not None else "is not set"
            raise UserError(
                f"rewards.unifiedreward.api_key_env: the environment variable {cfg.api_key_env} {state}; "
                "set it to the endpoint's API key, or set api_key_env to null for an endpoint without one"
            )
    return cfg.url.rstrip("/") + "/chat/completions", key


def unifiedreward(ctx: RewardContext) -> RewardFn:
    """UnifiedReward's point score / 5 per image, from the endpoint at `rewards.unifiedreward.url`."""
    cfg = ctx.settings.unifiedreward
    endpoint, key = _check(cfg)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"

    def scrub(text: str) -> str:
        """`text` without the API key (servers may echo the request back), before anything is cut or shown."""
        return text.replace(key, "***") if key else text

    def post(payload: bytes) -> str:
        request = urllib.request.Request(endpoint, data=payload, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=cfg.timeout) as response:
                return scrub(response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as err:
            try:
                body = err.read() or b""
            except (OSError, http.client.HTTPException):
                body = b""
            message = _excerpt(_server_message(scrub(body.decode("utf-8", "replace"))), 300)
            if 400 <= err.code < 500:
                raise _Fatal(f"HTTP {err.code} {err.reason}: {message}") from None
            raise _Transient(f"HTTP {err.code} {err.reason}: {message}") from None
        except TimeoutError:
            raise _Transient(f"no answer within {cfg.timeout:g} s (timeout)") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, TimeoutError):
                raise _Transient(f"no answer within {cfg.timeout:g} s (timeout)") from None
            raise _Transient(f"cannot connect ({type(reason).__name__}: {reason})") from None
        except (OSError, http.client.HTTPException) as err:  # reset or dropped connections, truncated bodies
            raise _Transient(f"connection failed ({type(err).__name__}: {err})") from None

    def score_one(index: int, image: np.ndarray, prompt: str, stop: threading.Event) -> tuple[float, str]:
        payload = json.dumps(
            {
                "model": cfg.model,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": png_data_url(image)}},
                            {"type": "text", "text": instruction(prompt)},
                        ],
                    }
                ],
                "temperature": 0,
                "max_tokens": cfg.max_tokens,
            }
        ).encode()
        last = ""
        for attempt in range(1, cfg.retries + 1):
            if stop.is_set():  # another image already failed the batch
                raise RewardError(f"reward {NAME!r}: image {index} cancelled after another image failed")
            if attempt > 1:
                time.sleep(min(_BACKOFF_S * 2 ** (attempt - 2), _BACKOFF_CAP_S))
            try:
                reply = _reply_text(post(payload))
            except _Fatal as err:
                raise RewardError(scrub(f"reward {NAME!r}: {endpoint} rejected image {index}: {err}")) from None
            except _Transient as err:
                last = f"request failed: {err}"
                continue
            value = parse_score(reply)
            if value is not None:
                return value, reply
            last = f'reply without a parsable "Final Score: x" (x from 1 to 5): {_excerpt(reply)}'
        raise RewardError(scrub(f"reward {NAME!r}: {endpoint}, image {index}: {cfg.retries} attempt(s) failed; {last}"))

    def reward(images: np.ndarray, metadata: list[dict]) -> RewardResult:
        if len(images) != len(metadata):
            raise RewardError(f"reward {NAME!r}: {len(images)} images but {len(metadata)} metadata rows")
        prompts = []
        for i, meta in enumerate(metadata):
            if not isinstance(meta, dict) or not isinstance(meta.get("prompt"), str):
                raise RewardError(f"reward {NAME!r}: metadata row {i} has no 'prompt' string")
            prompts.append(meta["prompt"])
        if len(images) == 0:
            return RewardResult(np.zeros(0), [])
        stop = threading.Event()
        pool = cf.ThreadPoolExecutor(max_workers=min(cfg.concurrency, len(images)), thread_name_prefix=NAME)
        try:
            futures = [pool.submit(score_one, i, images[i], p, stop) for i, p in enumerate(prompts)]
            done, _ = cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
            failed = [i for i, f in enumerate(futures) if f in done and f.exception() is not None]
            if failed:
                stop.set()
                raise futures[failed[0]].exception()
            results = [f.result() for f in futures]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return RewardResult(
            np.asarray([value for value, _ in results], dtype=np.float64),
            [{"reply": reply[:_REPLY_CHARS]} for _, reply in results],
        )

    return reward
