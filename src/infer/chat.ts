// Chat templates: a model's Hugging Face `chat_template` (Jinja) rendered with
// @huggingface/jinja into the prompt text, the loader that finds the template in a model
// directory, and a small default template for models trained here.
//
// Rendering follows transformers' apply_chat_template: the template sees `messages`,
// `add_generation_prompt`, `bos_token`, `eos_token`, `tools` (when given) and any extra kwargs
// (e.g. `enable_thinking`); blocks are trimmed (trim_blocks, lstrip_blocks) and
// `raise_exception(msg)` aborts with ChatTemplateError. Message content given as OpenAI content
// parts ([{type: "text", text}]) is joined with "\n" into a string first (vLLM's "string"
// content format), since most templates concatenate content as a string.
//
// Not here: tokenization of the rendered text (its special-token strings are matched as specials
// by the tokenizer's encode), tool-call parsing of the output, multimodal parts.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";

/** One chat message; extra fields (name, tool_calls, tool_call_id, …) are passed to the template as they are. */
export interface ChatMessage {
  role: string;
  content?: string | ChatContentPart[] | null;
  [key: string]: unknown;
}

export interface ChatContentPart {
  type: string;
  text?: string;
  [key: string]: unknown;
}

/** A template that cannot be parsed or rendered, a raise_exception, or bad messages. */
export class ChatTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ChatTemplateError";
  }
}

/**
 * Default template for models trained here (their tokenizers have no chat tokens): ChatML
 * turns, `<|im_start|>{role}\n{content}<|im_end|>\n`, and `<|im_start|>assistant\n` as the
 * generation prompt. Generation should stop at DEFAULT_CHAT_STOP.
 */
export const DEFAULT_CHAT_TEMPLATE =
  "{%- for message in messages %}\n" +
  "    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\n" +
  "{%- endfor %}\n" +
  "{%- if add_generation_prompt %}\n" +
  "    {{- '<|im_start|>assistant\\n' }}\n" +
  "{%- endif %}\n";

/** Stop strings that end an assistant turn of DEFAULT_CHAT_TEMPLATE. */
export const DEFAULT_CHAT_STOP: readonly string[] = Object.freeze(["<|im_end|>"]);

export interface RenderChatOptions {
  /** Template source (Jinja), or a compiled ChatTemplate. */
  template: string | ChatTemplate;
  /** Value of `bos_token`. Default "". */
  bosToken?: string;
  /** Value of `eos_token`. Default "". */
  eosToken?: string;
  /** Append the assistant turn's opening. Default true (transformers defaults to false; every caller here generates a reply). */
  addGenerationPrompt?: boolean;
  /** Tool definitions passed as `tools` (OpenAI function tools). Default: not defined. */
  tools?: readonly unknown[];
  /** Extra template variables (e.g. {enable_thinking: false}); may not shadow the names above. */
  kwargs?: Readonly<Record<string, unknown>>;
}

const RESERVED = ["messages", "add_generation_prompt", "bos_token", "eos_token", "tools", "raise_exception"];

/** Normalises and checks messages: content parts → one string, null/missing content → "". */
export function normalizeMessages(messages: unknown): ChatMessage[] {
  if (!Array.isArray(messages)) throw new ChatTemplateError("messages must be an array");
  return messages.map((m: unknown, i) => {
    if (typeof m !== "object" || m === null || Array.isArray(m)) throw new ChatTemplateError(`messages[${i}] must be an object`);
    const msg = m as Record<string, unknown>;
    if (typeof msg.role !== "string" || msg.role === "") throw new ChatTemplateError(`messages[${i}].role must be a non-empty string`);
    const c = msg.content;
    let content: string;
    if (c === undefined || c === null) content = "";
    else if (typeof c === "string") content = c;
    else if (Array.isArray(c)) {
      content = c
        .map((part: unknown, j) => {
          const p = part as ChatContentPart;
          if (typeof p !== "object" || p === null || p.type !== "text" || typeof p.text !== "string") {
            throw new ChatTemplateError(`messages[${i}].content[${j}]: only {type: "text", text} parts are supported, got type ${JSON.stringify((p as ChatContentPart | null)?.type)}`);
          }
          return p.text;
        })
        .join("\n");
    } else throw new ChatTemplateError(`messages[${i}].content must be a string, an array of text parts or null`);
    return { ...msg, role: msg.role, content } as ChatMessage;
  });
}

/** A parsed chat template, reusable across requests. */
export class ChatTemplate {
  readonly source: string;
  private readonly compiled: Template;

  /** `name` labels the template in errors (a file path, "default"). */
  constructor(source: string, readonly name = "chat_template") {
    if (typeof source !== "string" || source.length === 0) throw new ChatTemplateError(`${name}: the template must be a non-empty string`);
    this.source = source;
    try {
      this.compiled = new Template(source);
    } catch (e) {
      throw new ChatTemplateError(`${name}: cannot parse the template: ${(e as Error).message}`);
    }
  }

  /** Renders the prompt text for `messages`; see RenderChatOptions for the variables. */
  render(messages: unknown, opts: Omit<RenderChatOptions, "template"> = {}): string {
    const kwargs = opts.kwargs ?? {};
    for (const k of Object.keys(kwargs)) {
      if (RESERVED.includes(k)) throw new ChatTemplateError(`kwargs.${k} would shadow the template variable of that name; use the option instead`);
    }
    const vars: Record<string, unknown> = {
      ...kwargs,
      messages: normalizeMessages(messages),
      add_generation_prompt: opts.addGenerationPrompt ?? true,
      bos_token: opts.bosToken ?? "",
      eos_token: opts.eosToken ?? "",
    };
    if (opts.tools !== undefined) vars.tools = opts.tools;
    try {
      return this.compiled.render(vars);
    } catch (e) {
      throw new ChatTemplateError(`${this.name}: ${(e as Error).message}`);
    }
  }
}

/** Renders `messages` with a chat template (source or compiled); see RenderChatOptions. */
export function renderChat(messages: unknown, opts: RenderChatOptions): string {
  const t = typeof opts.template === "string" ? new ChatTemplate(opts.template) : opts.template;
  return t.render(messages, opts);
}

/** A chat template found in a model directory (or the default). */
export interface LoadedChatTemplate {
  /** The chosen template's source. */
  template: string;
  /** Where it came from: a file path, or "default". */
  source: string;
  /** Its name when tokenizer_config.json lists named templates, else null. */
  name: string | null;
  /** Every named template in tokenizer_config.json (empty for a single template). */
  named: Readonly<Record<string, string>>;
  /** bos_token / eos_token from tokenizer_config.json ("" when absent). */
  bosToken: string;
  eosToken: string;
  /** True when the model had no template and DEFAULT_CHAT_TEMPLATE was used. */
  isDefault: boolean;
}

export interface LoadChatTemplateOptions {
  /** Pick this named template (tokenizer_config.json list form). Default: "tool_use" when `withTools`, else "default". */
  name?: string;
  /** The request has tools (prefers a "tool_use" template, as transformers does). Default false. */
  withTools?: boolean;
  /** Use DEFAULT_CHAT_TEMPLATE when the model has none (else throw). Default true. */
  fallback?: boolean;
}

function tokenText(v: unknown): string {
  if (typeof v === "string") return v;
  if (typeof v === "object" && v !== null && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return "";
}

/**
 * Finds a model directory's chat template, as transformers does: `chat_template.jinja` if
 * present, else `chat_template` in tokenizer_config.json — a string, or a list of
 * {name, template} from which `name` (or "tool_use" with tools, or "default") is picked.
 */
export function loadChatTemplate(modelDir: string, opts: LoadChatTemplateOptions = {}): LoadedChatTemplate {
  const cfgPath = join(modelDir, "tokenizer_config.json");
  let cfg: Record<string, unknown> = {};
  if (existsSync(cfgPath)) {
    try {
      cfg = JSON.parse(readFileSync(cfgPath, "utf8")) as Record<string, unknown>;
    } catch (e) {
      throw new ChatTemplateError(`${cfgPath}: not valid JSON: ${(e as Error).message}`);
    }
    if (typeof cfg !== "object" || cfg === null || Array.isArray(cfg)) throw new ChatTemplateError(`${cfgPath}: not a JSON object`);
  }
  const base = { bosToken: tokenText(cfg.bos_token), eosToken: tokenText(cfg.eos_token) };
  const named: Record<string, string> = {};
  const raw = cfg.chat_template;
  if (Array.isArray(raw)) {
    for (const [i, e] of raw.entries()) {
      const t = e as { name?: unknown; template?: unknown };
      if (typeof t !== "object" || t === null || typeof t.name !== "string" || typeof t.template !== "string") {
        throw new ChatTemplateError(`${cfgPath}: chat_template[${i}] must be {name: string, template: string}`);
      }
      named[t.name] = t.template;
    }
  } else if (raw !== undefined && raw !== null && typeof raw !== "string") {
    throw new ChatTemplateError(`${cfgPath}: chat_template must be a string or a list of {name, template}`);
  }

  const jinjaPath = join(modelDir, "chat_template.jinja");
  if (existsSync(jinjaPath) && opts.name === undefined) {
    return { ...base, template: readFileSync(jinjaPath, "utf8"), source: jinjaPath, name: null, named, isDefault: false };
  }
  if (typeof raw === "string") {
    if (opts.name !== undefined) throw new ChatTemplateError(`${cfgPath}: has a single chat template, not named ones (asked for "${opts.name}")`);
    return { ...base, template: raw, source: cfgPath, name: null, named, isDefault: false };
  }
  const names = Object.keys(named);
  if (names.length > 0) {
    const pick = opts.name ?? (opts.withTools && "tool_use" in named ? "tool_use" : "default");
    if (!(pick in named)) {
      throw new ChatTemplateError(`${cfgPath}: no chat template named "${pick}" (it has ${names.map((n) => `"${n}"`).join(", ")}); pass a name`);
    }
    return { ...base, template: named[pick]!, source: cfgPath, name: pick, named, isDefault: false };
  }
  if (opts.name !== undefined) throw new ChatTemplateError(`${modelDir}: has no named chat templates (asked for "${opts.name}")`);
  if (opts.fallback === false) throw new ChatTemplateError(`${modelDir}: no chat template (neither chat_template.jinja nor chat_template in tokenizer_config.json)`);
  return { ...base, template: DEFAULT_CHAT_TEMPLATE, source: "default", name: null, named, isDefault: true };
}
