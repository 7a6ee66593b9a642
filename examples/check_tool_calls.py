"""Check a model's tool calls the way toolrm-rl's rule reward does: parse, schema check, match.

    .venv/bin/python examples/check_tool_calls.py
"""

from toolrm_rl.core import ToolCatalog, parse
from toolrm_rl.core.match import GroundTruth
from toolrm_rl.core.schema import check_calls

tools = [{
    "type": "function",
    "function": {
        "name": "convert_currency",
        "description": "Convert an amount between currencies.",
        "parameters": {
            "type": "object",
            "properties": {
                "amount": {"type": "number"},
                "from_currency": {"type": "string"},
                "to_currency": {"type": "string"},
            },
            "required": ["amount", "from_currency", "to_currency"],
        },
    },
}]
# BFCL-style possible answer: acceptable values per parameter.
answer = [{"convert_currency": {"amount": [100], "from_currency": ["USD", "US dollar"], "to_currency": ["EUR"]}}]

outputs = {
    "correct": '<tool_call>{"name": "convert_currency", "arguments": {"amount": 100, "from_currency": "usd", "to_currency": "EUR"}}</tool_call>',
    "near miss (schema-valid, wrong value)": '<tool_call>{"name": "convert_currency", "arguments": {"amount": 100, "from_currency": "USD", "to_currency": "GBP"}}</tool_call>',
    "wrong type": '<tool_call>{"name": "convert_currency", "arguments": {"amount": "100", "from_currency": "USD", "to_currency": "EUR"}}</tool_call>',
    "broken JSON": '<tool_call>{"name": "convert_currency", "arguments": {"amount": 100,</tool_call>',
    "no call": "I cannot help with that.",
}

catalog = ToolCatalog.load(tools)
truth = GroundTruth(catalog, answer, category="simple")
for label, text in outputs.items():
    result = parse(text, "hermes")
    report = check_calls(result.calls, catalog)
    verdict = truth.check(result.calls)
    print(f"{label:40s} parse={'ok' if result.ok else result.error.kind:9s} "
          f"schema={'ok' if report.ok else ','.join(report.categories):12s} "
          f"bfcl={'valid' if verdict.valid else verdict.error_type}")
