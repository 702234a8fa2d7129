"""save/load in DSPy's JSON state format: round trips, DSPy files, secrets, safety."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import pydantic
import pytest

import dspex.programs._state as state_mod
import dspex.programs._state_files as files_mod
from dspex.errors import StateKeyError, UsageError
from dspex.programs import (
    ChainOfThought,
    Example,
    Module,
    Predict,
    Prediction,
    context,
    load,
)
from dspex.testing import DummyLM

DATA = Path(__file__).parent / "data"


class Citation(pydantic.BaseModel):
    title: str
    year: int


class RAG(Module):
    """The program the DSPy fixture file was saved from."""

    def __init__(self) -> None:
        super().__init__()
        self.rewrite = Predict("question -> query")
        self.generate_answer = ChainOfThought("context: list[str], question -> answer")

    def forward(self, question: str, context: list[str]) -> Prediction:
        query = self.rewrite(question=question).query
        result: Prediction = self.generate_answer(context=[*context, query], question=question)
        return result


pytestmark = pytest.mark.usefixtures("clean_settings")


def _trained() -> RAG:
    prog = RAG()
    prog.rewrite.demos = [
        Example(question="q1", query="search q1", dspy_uuid="u1").with_inputs("question")
    ]
    gen = prog.generate_answer.predict
    gen.demos = [
        Example(context=["c1", "c2"], question="q2", reasoning="r", answer="a2", augmented=True),
        {"question": "q3", "answer": "a3", "meta": {"cites": [Citation(title="T", year=2020)]}},
    ]
    gen.signature = gen.signature.with_instructions("Answer tersely.").with_updated_fields(
        "answer", prefix="Final Answer:", desc="one word"
    )
    return prog


def test_save_then_load_gives_an_equal_state(tmp_path: Path) -> None:
    prog = _trained()
    path = tmp_path / "rag.json"
    prog.save(path)
    fresh = RAG()
    fresh.load(path)
    assert fresh.dump_state() == prog.dump_state()
    gen = fresh.generate_answer.predict
    assert gen.signature == prog.generate_answer.predict.signature
    assert gen.signature.instructions == "Answer tersely."
    assert gen.signature.output_fields["answer"].json_schema_extra["prefix"] == "Final Answer:"
    assert gen.demos[1]["meta"] == {"cites": [{"title": "T", "year": 2020}]}
    assert fresh.rewrite.demos[0]["dspy_uuid"] == "u1"


def test_file_layout_matches_dspy(tmp_path: Path) -> None:
    path = tmp_path / "rag.json"
    _trained().save(path)
    text = path.read_text()
    assert text.endswith("}\n")
    saved = json.loads(text)
    ours = set(saved)
    theirs = set(json.loads((DATA / "dspy3_rag_program.json").read_text()))
    assert ours == theirs == {"rewrite", "generate_answer.predict", "metadata"}
    entry = saved["generate_answer.predict"]
    assert list(entry) == ["traces", "train", "demos", "signature", "lm"]
    assert list(entry["signature"]) == ["instructions", "fields"]
    assert entry["signature"]["fields"][2] == {
        "prefix": "Reasoning: Let's think step by step in order to",
        "description": "${reasoning}",
    }
    assert entry["demos"][0]["augmented"] is True
    versions = saved["metadata"]["dependency_versions"]
    assert set(versions) <= {"python", "dspy", "cloudpickle"}  # DSPy fails on unknown keys
    assert entry["lm"] is None


def test_a_dspy_saved_file_loads_and_drives_the_prompt() -> None:
    prog = RAG()
    prog.load(DATA / "dspy3_rag_program.json")
    rewrite = prog.rewrite
    assert rewrite.signature.instructions == "Rewrite the question into a short web search query."
    assert rewrite.signature.fields["query"].json_schema_extra["prefix"] == "Search Query:"
    assert rewrite.demos[0]["query"] == "author of Do Androids Dream of Electric Sheep"
    gen = prog.generate_answer.predict
    assert len(gen.demos) == 2
    assert gen.demos[0]["answer"] == "Philip K. Dick"
    assert gen.signature.fields["answer"].json_schema_extra["desc"] == "often between 1 and 5 words"
    assert gen.signature.fields["context"].json_schema_extra["desc"] == "may contain relevant facts"

    lm = DummyLM(
        [{"query": "capital of Peru"}, {"reasoning": "Lima is the capital", "answer": "Lima"}]
    )
    with context(lm=lm):
        assert (
            prog(question="Capital of Peru?", context=["Peru is in South America"]).answer == "Lima"
        )
    rewrite_system = lm.history[0]["messages"][0]["content"]
    answer_system = lm.history[1]["messages"][0]["content"]
    assert "Rewrite the question into a short web search query." in rewrite_system
    assert "Answer questions with short factoid answers, using the context." in answer_system
    assert "often between 1 and 5 words" in answer_system
    answer_turns = " ".join(m["content"] for m in lm.history[1]["messages"])
    assert "Philip K. Dick" in answer_turns  # the loaded demos are in the prompt


def test_saved_files_never_contain_api_keys(tmp_path: Path) -> None:
    prog = _trained()
    secret = "sk-live-THIS-MUST-NOT-LEAK"
    lm = DummyLM(
        [],
        api_key=secret,
        extra_headers={"Authorization": f"Bearer {secret}", "X-Trace": "ok"},
        aws_secret_access_key=secret,
        max_tokens=123,
    )
    prog.set_lm(lm)
    path = tmp_path / "rag.json"
    prog.save(path)
    text = path.read_text()
    assert secret not in text
    saved = json.loads(text)["rewrite"]["lm"]
    assert saved["model"] == "dummy"
    assert saved["max_tokens"] == 123  # ordinary settings survive
    assert saved["extra_headers"] == {"X-Trace": "ok"}
    assert secret not in json.dumps(prog.dump_state())


def test_is_secret_key() -> None:
    for key in ("api_key", "API_KEY", "openai_api_key", "Authorization", "client_secret", "token"):
        assert state_mod.is_secret_key(key), key
    for key in ("max_tokens", "temperature", "model", "top_k", "stop", "keywords"):
        assert not state_mod.is_secret_key(key), key


class _RecordingLM:
    """Stands in for dspex.LM (next issue) to observe what load would build."""

    built: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.model = kwargs["model"]
        self.kwargs = kwargs
        _RecordingLM.built.append(kwargs)

    def generate(self, messages: Any, params: Any) -> Any:
        raise AssertionError("not called")


def test_lm_state_loads_without_unsafe_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    _RecordingLM.built.clear()
    monkeypatch.setattr(state_mod, "_lm_factory", lambda: _RecordingLM)
    qa = Predict("sentence -> sentiment")
    qa.load(DATA / "dspy3_predict_with_lm.json")
    assert isinstance(qa.lm, _RecordingLM)
    assert qa.lm.model == "openai/gpt-4o-mini"
    assert "api_base" not in _RecordingLM.built[-1]  # would redirect traffic and the key
    assert _RecordingLM.built[-1]["max_tokens"] == 4000
    qa.load(DATA / "dspy3_predict_with_lm.json", allow_unsafe_lm_state=True)
    assert _RecordingLM.built[-1]["api_base"] == "http://attacker.invalid/v1"
    assert qa.signature.instructions == "Classify the sentiment of the sentence."


def test_lm_state_without_an_lm_class_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(state_mod, "_lm_factory", lambda: None)
    qa = Predict("sentence -> sentiment")
    qa.lm = DummyLM([])
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        qa.load(DATA / "dspy3_predict_with_lm.json")
    assert qa.lm is None
    assert "not restored" in caplog.text


def test_loading_never_executes_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.write_text, (marker, "code ran"))

    pkl = tmp_path / "state.pkl"
    pkl.write_bytes(pickle.dumps({"self": Payload()}))
    qa = Predict("question -> answer")
    with pytest.raises(UsageError, match="allow_pickle=True"):
        qa.load(pkl)  # unpickling only when the caller vouches for the file, as in DSPy
    program_dir = tmp_path / "prog"
    program_dir.mkdir()
    (program_dir / "program.pkl").write_bytes(pickle.dumps(Payload()))
    (program_dir / "metadata.json").write_text('{"dependency_versions": {}}')
    with pytest.raises(UsageError, match="allow_pickle=True"):
        load(program_dir)
    assert not marker.exists()

    # A JSON file is only data: code-like strings stay strings, unknown keys are ignored.
    hostile = {
        "self": {
            "demos": [{"question": "__import__('os').system('touch pwned')", "answer": "x"}],
            "forward": "os.system",
            "__class__": "builtins.eval",
            "signature": {
                "instructions": "{{7*7}} ${__import__('os')}",
                "fields": [
                    {"prefix": "Q:", "description": "d"},
                    {"prefix": "A:", "description": "d"},
                ],
            },
            "lm": None,
        }
    }
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(hostile))
    qa.load(path)
    assert qa.demos[0]["question"] == "__import__('os').system('touch pwned')"
    assert qa.signature.instructions == "{{7*7}} ${__import__('os')}"
    assert type(qa) is Predict
    assert callable(qa.forward)
    assert not marker.exists()


def test_a_bad_state_leaves_the_program_untouched(tmp_path: Path) -> None:
    prog = _trained()
    before = prog.dump_state()
    state = json.loads((DATA / "dspy3_rag_program.json").read_text())
    state["generate_answer.predict"]["signature"]["fields"].pop()  # wrong field count
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(state))
    with pytest.raises(UsageError, match=r"generate_answer\.predict"):
        prog.load(bad)
    assert prog.dump_state() == before  # `rewrite` was not half-loaded either
    del state["generate_answer.predict"]
    bad.write_text(json.dumps(state))
    with pytest.raises(
        UsageError, match=r"no entry for predictor\(s\) \['generate_answer.predict'\]"
    ) as info:
        prog.load(bad)
    # a KeyError too, as in DSPy, with the message unquoted
    assert isinstance(info.value, KeyError) and isinstance(info.value, StateKeyError)
    assert str(info.value).startswith("the state has no entry")
    bad.write_text("[1, 2]")
    with pytest.raises(UsageError, match="JSON object"):
        prog.load(bad)
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        prog.load(bad)
    assert prog.dump_state() == before


def test_a_state_file_that_is_not_utf8_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    prog = _trained()
    before = prog.dump_state()
    bad = tmp_path / "latin1.json"
    bad.write_bytes('{"generate_answer.predict": {"demos": ["caf\u00e9"]}}'.encode("latin-1"))
    with pytest.raises(UsageError) as info:
        prog.load(bad)
    message = str(info.value)
    assert str(bad) in message and "not a UTF-8 text file" in message and "0xe9" in message
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    assert prog.dump_state() == before


def test_a_state_file_nested_too_deeply_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    prog = _trained()
    before = prog.dump_state()
    deep = tmp_path / "deep.json"
    deep.write_text('{"x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(UsageError) as info:
        prog.load(deep)
    assert str(deep) in str(info.value) and "nests its JSON more deeply" in str(info.value)
    assert prog.dump_state() == before


def test_a_damaged_program_directory_is_a_usage_error_naming_the_file(tmp_path: Path) -> None:
    prog = _trained()
    target = tmp_path / "saved_program"
    prog.save(target, save_program=True)
    (target / "metadata.json").write_bytes(b'{"dependency_versions": "\xff\xfe"}')
    with pytest.raises(UsageError, match=r"metadata\.json is not a UTF-8 text file"):
        load(target, allow_pickle=True)
    (target / "metadata.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(UsageError, match=r"metadata\.json nests its JSON more deeply"):
        load(target, allow_pickle=True)
    (target / "metadata.json").write_text("{}")
    pickled = (target / "program.pkl").read_bytes()
    (target / "program.pkl").write_bytes(pickled[: len(pickled) // 2])  # truncated
    with pytest.raises(UsageError, match=r"cannot unpickle .*program\.pkl"):
        load(target, allow_pickle=True)


def test_paths_must_be_json_or_pkl(tmp_path: Path) -> None:
    prog = RAG()
    with pytest.raises(UsageError, match=r"must end in '\.json' or '\.pkl'"):
        prog.save(tmp_path / "state.txt")
    with pytest.raises(UsageError, match=r"must end in '\.json' or '\.pkl'"):
        prog.load(tmp_path / "state.yaml")
    assert list(tmp_path.iterdir()) == []


def test_pickled_state_saves_and_loads_only_with_allow_pickle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prog = _trained()
    secret = "sk-PKL-STATE-SECRET"
    prog.set_lm(DummyLM([], api_key=secret))
    path = tmp_path / "state.pkl"
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        prog.save(path)
    assert "Loading untrusted .pkl files can run arbitrary code" in caplog.text
    assert secret.encode() not in path.read_bytes()
    fresh = RAG()
    with pytest.raises(UsageError, match=r"arbitrary code.*allow_pickle=True"):
        fresh.load(path)
    assert fresh.rewrite.demos == []  # refused before anything was read
    fresh.load(path, allow_pickle=True)
    assert fresh.rewrite.demos == prog.rewrite.demos  # Examples stay Examples
    damaged = tmp_path / "damaged.pkl"
    damaged.write_bytes(path.read_bytes()[:20])
    with pytest.raises(UsageError, match=r"cannot unpickle .*damaged\.pkl"):
        RAG().load(damaged, allow_pickle=True)
    for name in ("rewrite", "generate_answer.predict"):  # values as DSPy serialises them
        assert fresh.dump_state()[name]["demos"] == prog.dump_state()[name]["demos"]
    assert (
        fresh.generate_answer.predict.signature.instructions
        == prog.generate_answer.predict.signature.instructions
    )


def test_metadata_records_installed_versions_only(tmp_path: Path) -> None:
    from importlib.metadata import PackageNotFoundError, version

    RAG().save(tmp_path / "s.json")
    metadata = json.loads((tmp_path / "s.json").read_text())["metadata"]
    versions = metadata["dependency_versions"]
    try:
        dspy_version: str | None = version("dspy")
    except PackageNotFoundError:
        dspy_version = None
    assert versions.get("dspy") == dspy_version  # never a DSPy version that is not here
    assert "3.0.3" not in json.dumps(metadata)
    try:
        own = version("dspex")
    except PackageNotFoundError:
        own = "unknown"
    assert metadata["dspex_version"] == own


def test_loading_warns_once_per_dependency_whose_version_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    here = {"python": "3.11", "dspy": "3.4.1", "cloudpickle": "3.1"}
    monkeypatch.setattr(files_mod, "dependency_versions", lambda: dict(here))
    path = tmp_path / "s.json"
    Predict("question -> answer").save(path)
    saved = json.loads(path.read_text())
    saved["metadata"]["dependency_versions"] = {
        "python": "3.9",
        "dspy": "2.4.0",
        "cloudpickle": "3.1",  # the same: no warning
        "numpy": "1.0",  # not installed here: nothing to compare
    }
    path.write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        Predict("question -> answer").load(path)
    warned = [r.getMessage() for r in caplog.records if "There is a mismatch of" in r.getMessage()]
    assert len(warned) == 2
    assert "`python==3.9`, but now you have `python==3.11`" in warned[0]
    assert "`dspy==2.4.0`, but now you have `dspy==3.4.1`" in warned[1]
    assert all(str(path) in message for message in warned)


def test_unserializable_demo_values_give_a_clear_error(tmp_path: Path) -> None:
    qa = Predict("question -> answer")
    qa.demos = [Example(question=object(), answer="x")]
    with pytest.raises(UsageError, match="cannot save the state of Predict as JSON"):
        qa.save(tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


def test_dspy_2_5_layout_loads() -> None:
    qa = Predict("question -> answer")
    qa.load_state(
        {
            "lm": None,
            "traces": [],
            "train": [],
            "demos": [{"question": "q", "answer": "a"}],
            "signature_instructions": "Old instructions.",
            "signature_prefix": "Final:",
        }
    )
    assert qa.signature.instructions == "Old instructions."
    assert qa.signature.fields["answer"].json_schema_extra["prefix"] == "Final:"
    assert qa.demos == [{"question": "q", "answer": "a"}]


def test_dump_state_without_json_mode_keeps_examples() -> None:
    qa = Predict("question -> answer")
    qa.demos = [Example(question="q", answer="a").with_inputs("question")]
    state = qa.dump_state(json_mode=False)
    assert isinstance(state["demos"][0], Example)
    assert state["demos"][0] == qa.demos[0]
    assert qa.dump_state()["demos"] == [{"question": "q", "answer": "a"}]


def test_whole_program_pickle_is_opt_in_and_keyless(tmp_path: Path) -> None:
    prog = _trained()
    secret = "sk-PICKLE-SECRET"
    prog.set_lm(DummyLM([], api_key=secret))
    target = tmp_path / "saved_program"
    prog.save(target, save_program=True)
    assert secret.encode() not in (target / "program.pkl").read_bytes()
    with pytest.raises(UsageError, match="allow_pickle=True"):
        load(target)
    restored = load(target, allow_pickle=True)
    assert isinstance(restored, RAG)
    assert (
        restored.dump_state()["generate_answer.predict"]["demos"]
        == prog.dump_state()["generate_answer.predict"]["demos"]
    )
    assert restored.generate_answer.predict.signature == prog.generate_answer.predict.signature
    with pytest.raises(UsageError, match="directory without a suffix"):
        prog.save(tmp_path / "x.pkl", save_program=True)


def test_a_lone_predict_loads_its_own_flat_save(tmp_path: Path) -> None:
    from dspex.programs import Example, Predict

    saved = Predict("question -> answer")
    saved.demos = [Example(question="q", answer="a")]
    target = tmp_path / "predict.json"
    saved.save(target)
    state = json.loads(target.read_text())
    assert "demos" in state and "self" not in state  # DSPy's flat layout
    fresh = Predict("question -> answer")
    fresh.load(target)
    assert [dict(d) for d in fresh.demos] == [{"question": "q", "answer": "a"}]


def test_a_program_whose_module_is_gone_raises_module_not_found_unless_stored_by_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "gone_module_xyz.py").write_text(
        "import dspex\n\n"
        "class Mine(dspex.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.cot = dspex.ChainOfThought('q -> a')\n\n"
        "    def forward(self, q):\n"
        "        return self.cot(q=q)\n"
    )
    monkeypatch.syspath_prepend(str(src))
    mod = importlib.import_module("gone_module_xyz")
    prog = mod.Mine()
    by_ref, by_value = tmp_path / "by_ref", tmp_path / "by_value"
    prog.save(by_ref, save_program=True)
    prog.save(by_value, save_program=True, modules_to_serialize=[mod])
    monkeypatch.delitem(sys.modules, "gone_module_xyz")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(src)])
    importlib.invalidate_caches()
    # DSPy's type, so `except ModuleNotFoundError` works; the note says the fix
    with pytest.raises(ModuleNotFoundError) as info:
        load(by_ref, allow_pickle=True)
    assert any("modules_to_serialize" in note for note in info.value.__notes__)
    loaded = load(by_value, allow_pickle=True)
    assert loaded.cot.predict.signature == prog.cot.predict.signature
