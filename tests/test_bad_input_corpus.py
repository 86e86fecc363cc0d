"""A property-based corpus of bad input for the command line: params files, prompt files, image folders.

For every invalid input `elborl` prints one `error:` message naming the file (and the key or line) and
exits with code 2, never a traceback (README, "The command line"). Decisions this corpus pins down:

- params: an empty file (blank lines, comments, `---`, `null`) is the defaults, valid (exit 0). A file with
  several problems gets one message of one line per problem (`format_validation_error`); only the first
  line carries `error:`, every line starts with the file name.
- prompts: an empty prompt is invalid (`prompt: expected a non-empty string`; GenEval's files never have
  one). A 100k-character prompt is valid: render draws the clauses, the words only travel along. Rows
  with a prompt-only tag (`ocr`) are valid metadata, but `render` has nothing to draw for them: an error.
- images: any mode PIL converts to RGB (L, P, RGBA, LA, 1, I;16) is accepted and scored (alpha is
  dropped); the size must be the world's (32 x 32). A PNG cut after its last pixel byte (only the
  checksums and IEND lost) decodes completely, as PIL allows; a PNG cut well before that is an error.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import string
import struct
import zlib
from functools import cache

import annotated_types
import numpy as np
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin
from pydantic import BaseModel, TypeAdapter, ValidationError

from elborl.config import Params
from elborl.geneval_io import PROMPT_ONLY_TAGS
from elborl.rewards.geneval import COLOR_NAMES, RELATIONS, TAGS
from tests.conftest import ROOT

PARAMS = ROOT / "params.yaml"
WORLD_CLASSES = Params().world.classes


def corpus(n: int = 40):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


def assert_one_error(code: int, err: str, source: object) -> None:
    """Exit 2 and one `error:` message about `source` (a file, or the folder of the file at fault)."""
    assert code == 2, err
    assert "Traceback" not in err
    assert err.count("error:") == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith(f"error: {source}"), err
    assert all(line.startswith(str(source)) for line in lines[1:]), err  # one line per problem, each names the file


# ---------------------------------------------------------------------------------------------- params files


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _sections(model: type[BaseModel] = Params, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], type]]:
    """Every section of params.yaml as (dotted path parts, its model), nested ones (rewards.pickscore) too."""
    out = []
    for name, field in model.model_fields.items():
        if _is_model(field.annotation):
            out.append(((*prefix, name), field.annotation))
            out.extend(_sections(field.annotation, (*prefix, name)))
    return out


SECTIONS = _sections()
LEAVES = [(path, key, f) for path, m in SECTIONS for key, f in m.model_fields.items() if not _is_model(f.annotation)]
BOUNDS = ("ge", "gt", "le", "lt")
RANGED = [
    (path, key, field, kind, getattr(m, kind, None) if kind != "min_length" else m.min_length)
    for path, key, field in LEAVES
    for m in field.metadata
    for kind in (*BOUNDS, "min_length")
    if (kind == "min_length" and isinstance(m, annotated_types.MinLen)) or (kind in BOUNDS and hasattr(m, kind))
]


@cache
def _adapter(annotation: object) -> TypeAdapter:
    return TypeAdapter(annotation)


def _rejects(annotation: object, value: object) -> bool:
    """The field's type (constraints aside) refuses `value`."""
    try:
        _adapter(annotation).validate_python(value)
    except ValidationError:
        return True
    return False


def _nest(keys: tuple[str, ...], value: object) -> dict:
    for key in reversed(keys):
        value = {key: value}
    return value


IDENTIFIERS = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
WRONG_VALUES = st.one_of(
    st.text(string.ascii_lowercase, min_size=1, max_size=8).map(lambda s: f"x{s}"),
    st.lists(st.integers(-5, 5), min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9), min_size=1),
    st.floats(0.01, 0.99),
    st.booleans(),
)
NOT_A_MAPPING = st.one_of(
    st.lists(st.integers(0, 9), max_size=3),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(string.ascii_letters, min_size=1, max_size=6),
)


@st.composite
def wrong_types(draw) -> tuple[dict, str]:
    """(params document, the dotted key at fault): one key of one section holds a value of the wrong type."""
    path, key, field = draw(st.sampled_from(LEAVES))
    value = draw(WRONG_VALUES.filter(lambda v: _rejects(field.annotation, v)))
    return _nest((*path, key), value), ".".join((*path, key))


@st.composite
def out_of_range(draw) -> tuple[dict, str]:
    """A number beyond a field's ge/gt/le/lt bound (from the field's metadata), or a list below min_length."""
    path, key, field, kind, bound = draw(st.sampled_from(RANGED))
    if kind == "min_length":
        value = field.get_default(call_default_factory=True)[: draw(st.integers(0, bound - 1))]
    elif _rejects(field.annotation, 0.5):  # an integer field
        step = draw(st.integers(0, 10**6)) + (kind in ("ge", "le"))
        value = bound - step if kind in ("ge", "gt") else bound + step
    else:
        step = draw(st.floats(0, 1e6)) + (1e-3 if kind in ("ge", "le") else 0.0)
        value = bound - step if kind in ("ge", "gt") else bound + step
    return _nest((*path, key), value), ".".join((*path, key))


@st.composite
def unknown_keys(draw) -> tuple[dict, str]:
    """A made-up key at the top level or inside a section."""
    path, model = draw(st.sampled_from([((), Params), *SECTIONS]))
    name = draw(IDENTIFIERS.filter(lambda k: k not in model.model_fields))
    return _nest((*path, name), draw(st.integers(0, 9))), ".".join((*path, name))


@st.composite
def not_mappings(draw) -> tuple[dict, str]:
    """A section that is a list or a scalar instead of a mapping."""
    path, _ = draw(st.sampled_from(SECTIONS))
    return _nest(path, draw(NOT_A_MAPPING)), ".".join(path)


def _check_params(cli, tmp_path, text: str | bytes) -> tuple[int, str, object]:
    path = tmp_path / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, _, err = cli("config", "check", "--params", path)
    return code, err, path


@corpus(60)
@given(case=st.one_of(wrong_types(), out_of_range(), unknown_keys(), not_mappings()))
# A valid field value that the world refuses (background near a colour anchor): the message named no file.
@example(case=({"world": {"background": [255, 0, 0]}}, "world.background"))
# A key holding a newline (quoted YAML): the message ran over two lines.
@example(case=({"world": {"a\nb": 1}}, "world.'a\\nb'"))
@example(case=({"rewards": {"pickscore": [1]}}, "rewards.pickscore"))
def test_params_with_one_problem_name_the_file_and_key(cli, tmp_path, case):
    doc, key = case
    code, err, path = _check_params(cli, tmp_path, yaml.safe_dump(doc))
    assert_one_error(code, err, path)
    assert f"{key}: " in err


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


@corpus(30)
@given(cases=st.lists(st.one_of(wrong_types(), out_of_range(), unknown_keys()), min_size=2, max_size=4))
def test_params_with_several_problems_are_one_error(cli, tmp_path, cases):
    doc: dict = {}
    for case, _ in cases:  # a later problem may replace an earlier one at the same key
        doc = _merge(doc, case)
    code, err, path = _check_params(cli, tmp_path, yaml.safe_dump(doc))
    assert_one_error(code, err, path)


@corpus(30)
@given(text=st.one_of(st.lists(st.integers()), st.integers(), st.floats(), st.booleans(),
                      st.text(string.ascii_letters + " ", max_size=20)).map(yaml.safe_dump))  # fmt: skip
@example(text="hello world\n")  # a bare string
@example(text="- world\n- train\n")
def test_params_that_are_not_a_mapping(cli, tmp_path, text):
    code, err, path = _check_params(cli, tmp_path, text)
    assert_one_error(code, err, path)
    assert "expected a mapping of sections" in err


BROKEN_YAML = [
    "a: [1, 2",
    "{",
    "]",
    "a: b: c",
    "\t- x",
    "key: 'unterminated",
    "- a\nb: c",
    "a: *nope",
    "a:\n  - b\n c: d",
    "? [1]\n: 2",
    "a: !!python/object:os.system x",
    "a: \x01",
    # PyYAML's scalar constructors raise ValueError / KeyError / IndexError, not YAMLError: were tracebacks.
    "a: !!int xyz",
    "a: !!bool maybe",
    "a: !!float ''",
    "schedule:\n  name: 2024-13-01",
    # Nesting deeper than Python's recursion limit: was a RecursionError traceback.
    "[" * 1000 + "]" * 1000,
]


@corpus(40)
@given(prefix=st.sampled_from([{}, {"world": {"size": 32}}, {"train": {"lr": 1e-5, "epochs": 3}}]).map(yaml.safe_dump),
       fragment=st.sampled_from(BROKEN_YAML), before=st.booleans())  # fmt: skip
@example(prefix="", fragment="a: 2024-13-01", before=False)
@example(prefix="", fragment="[" * 1000, before=False)
def test_broken_yaml(cli, tmp_path, prefix, fragment, before):
    text = f"{fragment}\n{prefix}" if before else f"{prefix}\n{fragment}\n"
    try:
        yaml.safe_load(text)
        assume(False)
    except Exception:  # any failure of PyYAML's is a broken file
        pass
    code, err, path = _check_params(cli, tmp_path, text)
    assert_one_error(code, err, path)
    assert "not valid YAML" in err


@corpus(30)
@given(prefix=st.sampled_from([b"", b"world:\n  size: 32\n", b"train: {lr: "]), junk=st.binary(min_size=1, max_size=12))
@example(prefix=b"", junk=b"\xff\xfe\x00bad")  # was a UnicodeDecodeError traceback
def test_params_that_are_not_utf8(cli, tmp_path, prefix, junk):
    try:
        (prefix + junk).decode("utf-8")
        assume(False)
    except UnicodeDecodeError:
        pass
    code, err, path = _check_params(cli, tmp_path, prefix + junk)
    assert_one_error(code, err, path)
    assert "not UTF-8" in err


@corpus(20)
@given(text=st.tuples(st.sampled_from(["", "---\n"]), st.lists(st.sampled_from(["", "  ", "# a comment", "#"]))).map(
    lambda t: t[0] + "\n".join(t[1])
))  # fmt: skip
@example(text="")
@example(text="null\n")
@example(text="~\n")
def test_an_empty_params_file_is_the_defaults(cli, tmp_path, text):
    code, err, _ = _check_params(cli, tmp_path, text)
    assert code == 0, err


@corpus(60)
@given(data=st.one_of(st.text("[]{}:,'\"-&*!|>%@#?\t\n ab1.~", max_size=40), st.binary(max_size=40)))
def test_any_params_text_is_valid_or_one_error(cli, tmp_path, data):
    code, err, path = _check_params(cli, tmp_path, data)
    if code != 0:
        assert_one_error(code, err, path)


# ---------------------------------------------------------------------------------------------- prompt files

VALID_ROWS = [
    {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"},
    {"tag": "two_object", "include": [{"class": "circle", "count": 1}, {"class": "square", "count": 1}],
     "prompt": "a photo of a circle and a square"},
    {"tag": "counting", "include": [{"class": "cross", "count": 3}], "exclude": [{"class": "cross", "count": 4}],
     "prompt": "a photo of three crosses"},
    {"tag": "colors", "include": [{"class": "triangle", "count": 1, "color": "red"}],
     "prompt": "a photo of a red triangle"},
    {"tag": "position", "include": [{"class": "cross", "count": 1},
                                    {"class": "square", "count": 1, "position": ["left of", 0]}],
     "prompt": "a photo of a square left of a cross"},
    {"tag": "color_attr", "include": [{"class": "square", "count": 1, "color": "pink"},
                                      {"class": "cross", "count": 1, "color": "green"}],
     "prompt": "a photo of a pink square and a green cross"},
]  # fmt: skip
ROWS = st.sampled_from(VALID_ROWS).map(copy.deepcopy)
WORDS = st.text(string.ascii_letters + "_ ", max_size=12)
JUNK = st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=2), st.floats(), st.booleans())

# A bad row: (its JSON line as bytes, where the message points after the file name, a fragment it holds).
# `where` is ":LINE: " for a line's fault (filled in by `prompt_files`), else what the message says instead.
LINE = ":{line}: "


@st.composite
def malformed_json(draw):
    text = json.dumps(draw(ROWS))
    cut = draw(st.integers(1, len(text) - 1))
    line = draw(st.sampled_from([text[:cut], text[:cut] + "}" + text[cut:], text[:cut] + text[cut + 1 :]]))
    try:
        json.loads(line)
        assume(False)
    except json.JSONDecodeError:
        pass
    return line.encode(), LINE, "not valid JSON"


@st.composite
def not_objects(draw):
    return json.dumps(draw(st.one_of(JUNK, st.text(max_size=5)))).encode(), LINE, "expected a JSON object"


@st.composite
def missing_fields(draw):
    row, key = draw(ROWS), draw(st.sampled_from(["tag", "include", "prompt"]))
    del row[key]
    return json.dumps(row).encode(), LINE, f"missing key '{key}'"


@st.composite
def unknown_tags(draw):
    row = draw(ROWS)
    row["tag"] = draw(st.one_of(WORDS.filter(lambda t: t not in (*TAGS, *PROMPT_ONLY_TAGS)), JUNK))
    return json.dumps(row).encode(), LINE, "tag: expected one of"


@st.composite
def bad_prompts(draw):
    row = draw(ROWS)
    row["prompt"] = draw(st.one_of(st.just(""), JUNK))
    return json.dumps(row).encode(), LINE, "prompt: expected a non-empty string"


@st.composite
def bad_ocr_rows(draw):
    row = {"tag": "ocr", "prompt": "a sign that says hello", "text": "hello"}
    key = draw(st.sampled_from(["prompt", "text"]))
    if draw(st.booleans()):
        del row[key]
    else:
        row[key] = draw(st.one_of(st.just(""), JUNK))
    return json.dumps(row).encode(), LINE, f"{key}: expected a non-empty string for a 'ocr' prompt"


@st.composite
def unknown_classes(draw):
    row = draw(ROWS)
    name = draw(IDENTIFIERS.filter(lambda c: c not in WORLD_CLASSES))
    for clause in row["include"]:
        clause["class"] = name
    return json.dumps(row).encode(), ": classes not in the world: ", name


@st.composite
def bad_clauses(draw):
    row = draw(ROWS)
    i = draw(st.integers(0, len(row["include"]) - 1))
    clause = row["include"][i]
    fault = draw(st.sampled_from(["count", "class", "color", "position", "key", "object", "include"]))
    if fault == "count":
        clause["count"] = draw(st.one_of(st.integers(1, 4).map(str), st.integers(max_value=0), st.floats(),
                                         st.booleans(), st.none(), st.lists(st.integers(), max_size=1)))  # fmt: skip
        return json.dumps(row).encode(), LINE, f"include[{i}].count: expected an integer >= 1"
    if fault == "class":
        clause["class"] = draw(st.one_of(st.just(""), JUNK))
        return json.dumps(row).encode(), LINE, f"include[{i}].class: expected a class name"
    if fault == "color":
        clause["color"] = draw(st.one_of(WORDS.filter(lambda c: c not in COLOR_NAMES), JUNK))
        return json.dumps(row).encode(), LINE, f"include[{i}].color: expected one of"
    if fault == "position":
        # Every form is a fault, whatever i: floats and booleans are no clause indices.
        rel, earlier = draw(st.sampled_from(RELATIONS)), draw(st.integers(0, max(i - 1, 0)))
        clause["position"] = draw(st.sampled_from([
            [draw(WORDS.filter(lambda r: r not in RELATIONS)), earlier],  # a bad relation
            [rel, draw(st.integers(i, i + 5))],  # not an earlier clause (itself or a later one)
            [rel, draw(st.integers(max_value=-1))],
            [rel, str(earlier)], [rel, float(earlier)], [rel, True], [rel], [rel, earlier, 0], rel, None,
        ]))  # fmt: skip
        return json.dumps(row).encode(), LINE, f"include[{i}].position: expected [relation, index of an earlier"
    if fault == "key":
        clause[draw(IDENTIFIERS.filter(lambda k: k not in ("class", "count", "color", "position")))] = 1
        return json.dumps(row).encode(), LINE, f"include[{i}]: unknown key(s)"
    if fault == "object":
        row["include"][i] = draw(st.one_of(JUNK, st.text(max_size=5)))
        return json.dumps(row).encode(), LINE, f"include[{i}]: expected an object"
    row["include"] = draw(st.one_of(st.just([]), JUNK.filter(lambda v: not isinstance(v, list) or not v)))
    return json.dumps(row).encode(), LINE, "include: expected a non-empty list of clauses"


@st.composite
def not_utf8(draw):
    text = json.dumps(draw(ROWS)).encode()
    junk = draw(st.binary(min_size=1, max_size=4).filter(lambda b: b"\n" not in b and b"\r" not in b))
    try:
        junk.decode("utf-8")
        assume(False)
    except UnicodeDecodeError:
        pass
    at = draw(st.integers(0, len(text)))
    return text[:at] + junk + text[at:], LINE, "not UTF-8"


BAD_ROWS = st.one_of(malformed_json(), not_objects(), missing_fields(), unknown_tags(), bad_prompts(), bad_ocr_rows(),
                     unknown_classes(), bad_clauses(), not_utf8())  # fmt: skip


@st.composite
def prompt_files(draw):
    """(file bytes, where, fragment): valid rows and blank lines around one bad row."""
    line, where, fragment = draw(BAD_ROWS)
    before = draw(st.lists(st.one_of(ROWS.map(json.dumps), st.just(""), st.just("  ")), max_size=3))
    after = draw(st.lists(ROWS.map(json.dumps), max_size=2))
    lines = [*(b.encode() for b in before), line, *(a.encode() for a in after)]
    return b"\n".join(lines) + b"\n", where.format(line=len(before) + 1), fragment


def _render(cli, tmp_path, content: bytes) -> tuple[int, str, object]:
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(content)
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    code, _, err = cli("render", "--metadata", path, "--out", tmp_path / "out", "--images-per-prompt", 1,
                       "--params", PARAMS)  # fmt: skip
    return code, err, path


def _row(**fields) -> bytes:
    return json.dumps({**VALID_ROWS[0], **fields}).encode() + b"\n"


@corpus(60)
@given(case=prompt_files())
@example(case=(b"\xff\xfe{}\n", ":1: ", "not UTF-8"))  # was a UnicodeDecodeError traceback
@example(case=(b"[" * 100_000 + b"]" * 100_000 + b"\n", ":1: ", "not valid JSON"))  # was a RecursionError traceback
@example(case=(_row(prompt=""), ":1: ", "prompt: expected a non-empty string"))  # was accepted
@example(case=(json.dumps(VALID_ROWS[4] | {"include": [{"class": "cross", "count": 1}, {"class": "cross", "count": 1},
                                                         {"class": "square", "count": 1, "position": ["left of", True]}]
                                            }).encode(),  # `true` as a clause index: was accepted as 1
               ":1: ", "include[2].position: expected"))  # fmt: skip
# A prompt-only row: valid metadata, nothing to draw: was a KeyError traceback.
@example(case=(_row() + json.dumps({"tag": "ocr", "prompt": "a sign", "text": "hi"}).encode(), ": prompt 1: ",
               "tag: expected one of"))  # fmt: skip
# More objects than the world holds: was a RuntimeError traceback ("no layout found").
@example(case=(_row(tag="counting", include=[{"class": "circle", "count": 40}]), ": prompt 0 (folder 00000): ",
               "no layout of its objects fits"))  # fmt: skip
def test_bad_prompt_files(cli, tmp_path, case):
    content, where, fragment = case
    code, err, path = _render(cli, tmp_path, content)
    assert_one_error(code, err, path)
    assert f"{path}{where}" in err and fragment in err


@corpus(20)
@given(lines=st.lists(st.sampled_from(["", " ", "\t", "\r", "  \t "]), max_size=8))
def test_a_file_of_blank_lines(cli, tmp_path, lines):
    code, err, path = _render(cli, tmp_path, "\n".join(lines).encode())
    assert_one_error(code, err, path)
    assert f"{path}: no metadata lines" in err


@corpus(8)
@given(words=st.text(min_size=1, max_size=30))
@example(words="a\u2028b")  # raw U+2028 / NEL inside a JSON string: splitlines() broke the line in two
@example(words="\x85")
def test_a_100k_character_prompt_is_valid(cli, tmp_path, words):
    prompt = (words * (100_000 // len(words) + 1))[:100_000]
    code, err, _ = _render(cli, tmp_path, json.dumps({**VALID_ROWS[0], "prompt": prompt}, ensure_ascii=False).encode())
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "00000" / "metadata.jsonl").read_text())["prompt"] == prompt


# ---------------------------------------------------------------------------------------------- image folders

META = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}


def _png(image: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **save)
    return buf.getvalue()


def _circle() -> Image.Image:
    from elborl.world.render import render_images
    from elborl.world.spec import WorldSpec

    return Image.fromarray(render_images(META, WorldSpec.from_config(), 1, 0, 0)[0])


def _with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its header claiming another size (a decompression bomb when huge)."""
    body = struct.pack(">II", width, height) + png[24:29]
    return png[:16] + body + struct.pack(">I", zlib.crc32(b"IHDR" + body)) + png[33:]


def _text_bomb() -> bytes:
    """A 32 x 32 PNG with a zTXt chunk that inflates past PIL's MAX_TEXT_CHUNK."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 3_000_000, zip=True)
    return _png(Image.new("RGB", (32, 32)), pnginfo=info)


CIRCLE = _png(_circle())
PIXELS_END = CIRCLE.rindex(b"IEND") - 4 - 8  # the IDAT CRC and zlib's adler32 come after the last pixel byte


def _score(cli, tmp_path, png: bytes) -> tuple[int, str, object]:
    root = tmp_path / "images"
    shutil.rmtree(root, ignore_errors=True)
    (root / "00000" / "samples").mkdir(parents=True)
    (root / "00000" / "metadata.jsonl").write_text(json.dumps(META) + "\n")
    (root / "00000" / "samples" / "0000.png").write_bytes(png)
    code, _, err = cli("score", "--images", root, "--out", tmp_path / "scores", "--params", PARAMS)
    return code, err, root / "00000" / "samples" / "0000.png"


@corpus(25)
@given(size=st.tuples(st.integers(1, 96), st.integers(1, 96)).filter(lambda s: s != (32, 32)))
@example(size=(31, 32))
@example(size=(64, 64))
def test_images_of_the_wrong_size(cli, tmp_path, size):
    code, err, path = _score(cli, tmp_path, _png(_circle().resize(size)))
    assert_one_error(code, err, path)
    assert f"expected a 32x32 image (the world's size), found {size[0]}x{size[1]}" in err


@corpus(10)
@given(mode=st.sampled_from(["RGB", "L", "P", "RGBA", "LA", "1", "I;16"]))
def test_images_of_any_mode_convert_to_rgb(cli, tmp_path, mode):
    code, err, _ = _score(cli, tmp_path, _png(_circle().convert(mode)))
    assert code == 0, err
    assert json.loads((tmp_path / "scores" / "summary.json").read_text())["n_images"] == 1


@corpus(40)
@given(cut=st.integers(0, len(CIRCLE) - 1))
def test_truncated_pngs(cli, tmp_path, cut):
    code, err, path = _score(cli, tmp_path, CIRCLE[:cut])
    if cut < PIXELS_END - 16 or code != 0:  # well before the last pixel byte: always an error
        assert_one_error(code, err, path)
        assert "not a readable image" in err


@corpus(30)
@given(data=st.binary(max_size=300))
@example(data=b"")  # an empty file
@example(data=CIRCLE[:8])  # the PNG signature alone
@example(data=_with_ihdr_size(CIRCLE, 100_000, 100_000))  # was a DecompressionBombError traceback
@example(data=_text_bomb())  # was a ValueError traceback ("Decompressed data too large")
def test_unreadable_pngs(cli, tmp_path, data):
    code, err, path = _score(cli, tmp_path, data)
    assert_one_error(code, err, path)
    assert "not a readable image" in err or "expected a 32x32 image" in err


def test_the_crafted_pngs_are_what_they_claim():
    assert Image.open(io.BytesIO(_with_ihdr_size(CIRCLE, 100, 50))).size == (100, 50)
    assert np.asarray(Image.open(io.BytesIO(CIRCLE)).convert("RGB")).shape == (32, 32, 3)
