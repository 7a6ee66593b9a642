"""toolrm-rl: outcome reward models for tool-calling LLMs (ToolRM), as a verl RL plugin.

Importing the package is cheap and never imports torch; the tool-call core lives in
:mod:`toolrm_rl.core` (parse, schema checks, BFCL matching, rendering of reward-model inputs).
"""

__version__ = "0.1.0"
