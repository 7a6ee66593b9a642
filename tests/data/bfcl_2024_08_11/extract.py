"""Re-create this fixture from a checkout of github.com/HuanzhiMao/BFCL-Result (commit b4adfc9b).

    python tests/data/bfcl_2024_08_11/extract.py <BFCL-Result>/2024-08-11/score tests/data/bfcl_2024_08_11

Per model and AST category: the summary line, the two shortest rows with a decoded output and the
shortest undecodable one; plus the rows named in SPECIAL (known quirks of the 2024 data) and the
first row of two non-AST categories. Rows are copied byte for byte.
"""

import json
import sys
from pathlib import Path

MODELS = ("gorilla-openfunctions-v2", "gpt-4o-2024-05-13-FC", "claude-3-haiku-20240307")
AST = ("simple", "multiple_function", "parallel_function", "parallel_multiple_function", "java", "javascript")
SPECIAL = {  # (model, category): question ids
    ("gorilla-openfunctions-v2", "java"): ("java_1", "java_64"),  # HashMap answers written as literal maps
    ("gorilla-openfunctions-v2", "parallel_function"): ("parallel_function_178",),  # answer keys "f 1", "f 2"
    ("gorilla-openfunctions-v2", "parallel_multiple_function"): ("parallel_multiple_function_179",),  # stray "deck"
    ("gpt-4o-2024-05-13-FC", "simple"): ("simple_200",),  # a required parameter whose options include ""
}
NON_AST = ("relevance", "executable_simple")


def main(score_dir: Path, out_dir: Path) -> None:
    for model in MODELS:
        for category in AST + NON_AST:
            lines = (score_dir / model / f"{category}_score.json").read_text().splitlines()
            rows = [(line, json.loads(line)) for line in lines[1:]]
            if category in NON_AST:
                keep = [rows[0][0]] if model == MODELS[0] else []
            else:
                decoded = sorted((r for r in rows if isinstance(r[1].get("model_result_decoded"), list)),
                                 key=lambda r: len(r[0]))
                undecoded = sorted((r for r in rows if "model_result_decoded" not in r[1]), key=lambda r: len(r[0]))
                special = SPECIAL.get((model, category), ())
                chosen = {r[0] for r in decoded[:2] + undecoded[:1]}
                chosen |= {line for line, row in rows if row.get("prompt", {}).get("id") in special}
                keep = [line for line, _ in rows if line in chosen]
            if keep:
                path = out_dir / "score" / model / f"{category}_score.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("\n".join([lines[0], *keep]) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
