"""Build the renderer's fixed corpus: inputs and what ``core.render`` makes of them under several specs.

    .venv/bin/python tests/data/make_render_corpus.py            # re-render the stored inputs (expected outputs)
    .venv/bin/python tests/data/make_render_corpus.py --inputs   # also rebuild the inputs from the offline sources

``tests/test_render_corpus.py`` renders every stored input again and compares text, token count,
truncation report and context with the stored ones: a change of the renderer's output fails it. A
change made on purpose (the rendering itself changed) is recorded by running this script again.
Inputs: candidates (the gold calls and a mutation) from the offline training sources (never a BFCL
single-turn question) plus hand-written edge cases (abstentions, observations, calls outside the
catalog, nested schemas, a catalog far over the budget, lone surrogates).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "render_corpus.json.gz"
SOURCES = {"bfcl_exec": 4, "bfcl_sql": 3, "bfcl_rest": 2, "bfcl_multi_turn": 4, "nestful": 3, "complexfuncbench": 2,
           "tau2": 3, "agentdojo": 3}


def specs() -> dict[str, tuple[dict[str, Any], str | None]]:
    """Spec name -> (RenderSpec fields, tokenizer: 'minilm', 'qwen3' or None)."""
    minilm_cpu = {"mode": "plain", "max_tokens": 192, "candidate_tokens": 48, "sep": " [SEP] ",
                  "mark_grounding": True, "mark_coverage": True}  # recipes/rm/minilm_cpu.yaml as of the corpus (160 since)
    return {
        "minilm_cpu": (minilm_cpu, "minilm"),
        "minilm_tight": ({**minilm_cpu, "max_tokens": 96, "candidate_tokens": 24}, "minilm"),
        "plain_estimate": ({"mode": "plain", "max_tokens": 256}, None),
        "plain_unbounded": ({"mode": "plain", "max_tokens": None, "mark_coverage": False}, None),
        "qwen3_chat": ({"mode": "chat_template", "max_tokens": 640, "candidate_tokens": 64}, "qwen3"),
    }


def tokenizers() -> dict[str, Any]:
    """The tokenizers the specs name (offline packages)."""
    from transformers import AutoTokenizer

    from toolrm_rl.data.backbones import minilm_dir, qwen3_tokenizer_dir

    return {"minilm": AutoTokenizer.from_pretrained(str(minilm_dir())),
            "qwen3": AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir()))}


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def edge_cases() -> list[dict[str, Any]]:
    """Hand-written inputs for paths the sources rarely take."""
    weather = {"name": "get_weather", "description": "Current weather for a city, in the unit asked for.",
               "parameters": {"type": "dict", "properties": {
                   "city": {"type": "string", "description": "City name, e.g. Paris."},
                   "unit": {"type": "string", "enum": ["C", "F"], "default": "C"}}, "required": ["city"]}}
    nested = {"name": "book_trip", "description": "Book flights and hotels for a group. " * 6,
              "parameters": {"type": "object", "properties": {
                  "travellers": {"type": "array", "description": "Who travels.", "items": {
                      "type": "object", "properties": {"name": {"type": "string", "description": "Full name."},
                                                       "age": {"type": "integer"}}, "required": ["name"]}},
                  "hotel": {"type": "object", "description": "Hotel wishes.", "properties": {
                      "stars": {"type": "integer", "description": "Minimum stars " * 10},
                      "city": {"type": "string"}}}}, "required": ["travellers"]}}
    big = [{"name": f"tool_{i}_{w}", "description": f"Tool {i} handles {w} requests with many careful options. " * 4,
            "parameters": {"type": "dict", "properties": {
                "amount": {"type": "integer", "description": "How much of it, as a whole number. " * 3},
                "label": {"type": "string", "description": "A label for the " + w + " record."}}, "required": ["amount"]}}
           for i, w in enumerate(["invoice", "weather", "flight", "hotel", "music", "stock", "recipe", "email"] * 3)]
    chat = [{"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": '{"temp": 21, "sky": "clear"}'},
            {"role": "assistant", "content": "It is 21 C and clear in Paris."},
            {"role": "user", "content": "And in 'New York' and Oslo, in F please, for 3 days?"}]
    long_turns = [{"role": "user", "content": f"Earlier question number {i} about invoices and flights. " * 8}
                  for i in range(6)] + [{"role": "assistant", "content": "Noted. " * 30},
                                        {"role": "user", "content": "Book 2 flights for Ann (34) to Rome, then a hotel."}]
    return [
        {"id": "edge_weather", "tools": [weather], "conversation": [{"role": "user", "content": "Weather in Paris?"}],
         "calls": [_call("get_weather", city="Paris")]},
        {"id": "edge_weather_wrong", "tools": json.dumps([weather]),
         "conversation": json.dumps([{"role": "user", "content": "Weather in Paris?"}]),
         "calls": [_call("get_weather", city="paris ", unit="K"), _call("get_forecast", city="Paris")]},
        {"id": "edge_abstain", "tools": [weather], "conversation": [{"role": "user", "content": "Tell me a joke."}],
         "calls": [], "text": "  I cannot help with jokes using these tools. "},
        {"id": "edge_observations", "tools": [weather], "conversation": chat,
         "calls": [_call("get_weather", city="New York", unit="F"), _call("get_weather", city="Oslo", unit="F")],
         "text": "Checking both."},
        {"id": "edge_bfcl_turns", "tools": [weather],
         "conversation": [[{"role": "user", "content": "Weather in Rome?"}],
                          [{"role": "assistant", "content": "Rome: 25 C."}, {"role": "user", "content": "Now Bergen."}]],
         "calls": [_call("get_weather", city="Bergen")]},
        {"id": "edge_nested", "tools": [nested, weather], "conversation": long_turns,
         "calls": [_call("book_trip", travellers=[{"name": "Ann", "age": 34}, {"name": "Bob"}],
                         hotel={"stars": 4, "city": "Rome"})]},
        {"id": "edge_big_catalog", "tools": big + [weather], "conversation": long_turns[-3:],
         "calls": [_call("tool_2_flight", amount=2, label="Rome")]},
        {"id": "edge_no_user", "tools": big[:3], "conversation": [], "calls": [_call("tool_0_invoice", amount=1)]},
        {"id": "edge_unicode", "tools": [weather],
         "conversation": [{"role": "user", "content": "Wetter in Zürich? \ud800 Ümlaut 東京 " + "très long " * 80}],
         "calls": [_call("get_weather", city="Zürich\udc00")]},
        {"id": "edge_huge_candidate", "tools": [weather], "conversation": [{"role": "user", "content": "Weather?"}],
         "calls": [_call("get_weather", city="x " * 300, unit=list(range(40)))]},
    ]


def source_inputs() -> list[dict[str, Any]]:
    """Per source, the first examples' gold calls and one mutation of them (seeded)."""
    from toolrm_rl.data.mutate import mutate
    from toolrm_rl.data.sources import load_source

    out = []
    for name, n in SOURCES.items():
        try:
            examples = load_source(name)
        except Exception as err:  # an optional package is missing: the corpus just has fewer sources
            print(f"skipping {name}: {err}", file=sys.stderr)
            continue
        step = max(1, len(examples) // n)
        for ex in examples[::step][:n]:
            tools = [spec.to_openai()["function"] for spec in ex.tools]
            base = {"tools": tools, "conversation": ex.conversation}
            out.append({"id": ex.id, **base, "calls": [_call(c.name, **c.arguments) for c in ex.gold]})
            wrong = next(iter(mutate(ex.gold, ex.tools, seed=len(out))), None) if ex.gold else None
            if wrong is not None:
                out.append({"id": ex.id + "#m", **base, "calls": [_call(c.name, **c.arguments) for c in wrong[1]]})
    return out


def render_all(inputs: list[dict[str, Any]], toks: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Spec name -> one record per input: text, n_tokens, n_tokens_exact, truncation, context."""
    from toolrm_rl.core.calls import ToolCall
    from toolrm_rl.core.render import RenderSpec, render

    out = {}
    for name, (fields, tok) in specs().items():
        spec, tokenizer = RenderSpec(**fields), toks[tok] if tok else None
        rows = []
        for item in inputs:
            calls = [ToolCall(c["name"], c["arguments"]) for c in item["calls"]]
            r = render(item["tools"], item["conversation"], calls, spec=spec, tokenizer=tokenizer,
                       candidate_text=item.get("text"))
            rows.append({"text": r.text, "n_tokens": r.n_tokens, "n_tokens_exact": r.n_tokens_exact,
                         "truncation": dataclasses.asdict(r.truncation), "context": r.context})
        out[name] = rows
    return out


def load_corpus(path: Path = CORPUS) -> dict[str, Any]:
    """The stored corpus: ``{"inputs": [...], "expected": {spec name: [record per input]}}``."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", action="store_true", help="rebuild the inputs from the offline sources too")
    args = ap.parse_args()
    inputs = source_inputs() + edge_cases() if args.inputs or not CORPUS.exists() else load_corpus()["inputs"]
    data = {"inputs": inputs, "expected": render_all(inputs, tokenizers())}
    # ASCII JSON: lone surrogates survive as \u escapes (the renderer must meet them)
    raw = json.dumps(data, ensure_ascii=True)  # key order kept: it is part of the input
    tmp = CORPUS.with_suffix(".tmp")
    with gzip.GzipFile(tmp, "wb", mtime=0) as f:
        f.write(raw.encode("ascii"))
    tmp.replace(CORPUS)
    print(f"wrote {CORPUS}: {len(inputs)} inputs x {len(data['expected'])} specs, {CORPUS.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
