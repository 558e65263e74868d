// Chat-template tests: the real templates of Mixtral, Qwen1.5-MoE (ChatML), Phi-3.5-MoE and
// OLMoE-Instruct rendered here must equal Python jinja2's renders configured as transformers'
// apply_chat_template (test/fixtures/chat/templates.json, written by
// tools/reference/make_chat_fixtures.py), including their raise_exception errors; plus the
// loader's file rules, content parts, kwargs and tools.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ChatTemplate, ChatTemplateError, DEFAULT_CHAT_STOP, DEFAULT_CHAT_TEMPLATE, loadChatTemplate, renderChat } from "../src/infer/chat.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
interface Fixture {
  templates: Record<string, { bos: string; eos: string; template: string }>;
  conversations: Record<string, Array<{ role: string; content: string }>>;
  cases: Array<{ template: string; conversation: string; add_generation_prompt: boolean; expected?: string; error?: string }>;
}
const FIX = JSON.parse(readFileSync(path.join(ROOT, "test", "fixtures", "chat", "templates.json"), "utf8")) as Fixture;

test("real family templates render exactly as jinja2 renders them (transformers settings)", () => {
  assert.deepEqual(Object.keys(FIX.templates).sort(), ["default", "mixtral", "olmoe", "phimoe", "qwen2_moe"]);
  const compiled = new Map(Object.entries(FIX.templates).map(([k, t]) => [k, new ChatTemplate(t.template, k)]));
  let rendered = 0, errors = 0;
  for (const c of FIX.cases) {
    const t = FIX.templates[c.template]!;
    const run = () => compiled.get(c.template)!.render(FIX.conversations[c.conversation], { bosToken: t.bos, eosToken: t.eos, addGenerationPrompt: c.add_generation_prompt });
    const what = `${c.template}/${c.conversation}/agp=${c.add_generation_prompt}`;
    if (c.error !== undefined) {
      assert.throws(run, (e: unknown) => e instanceof ChatTemplateError && e.message.includes(c.error!), what);
      errors++;
    } else {
      assert.equal(run(), c.expected, what);
      rendered++;
    }
  }
  assert.ok(rendered >= 50 && errors >= 4, `${rendered} renders, ${errors} errors`);
});

test("a few renders written out by hand (the formats as the model cards describe them)", () => {
  const conv = [
    { role: "user", content: "What is 2+2?" },
    { role: "assistant", content: "4" },
    { role: "user", content: "And 3+3?" },
  ];
  const t = (k: string) => FIX.templates[k]!;
  const r = (k: string) => renderChat(conv, { template: t(k).template, bosToken: t(k).bos, eosToken: t(k).eos });
  assert.equal(r("mixtral"), "<s>[INST] What is 2+2? [/INST]4</s>[INST] And 3+3? [/INST]");
  assert.equal(r("qwen2_moe"), "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n");
  assert.equal(r("phimoe"), "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n4<|end|>\n<|user|>\nAnd 3+3?<|end|>\n<|assistant|>\n");
  assert.equal(r("olmoe"), "<|endoftext|><|user|>\nWhat is 2+2?\n<|assistant|>\n4<|endoftext|>\n<|user|>\nAnd 3+3?\n<|assistant|>\n");
  assert.equal(r("default"), "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n");
  // the fixture's copy of the default template is the one the code ships
  assert.equal(FIX.templates.default!.template, DEFAULT_CHAT_TEMPLATE);
  assert.deepEqual([...DEFAULT_CHAT_STOP], ["<|im_end|>"]);
});

test("content parts are joined, null content is empty, bad messages are named", () => {
  const tpl = FIX.templates.qwen2_moe!.template;
  const parts = renderChat([{ role: "user", content: [{ type: "text", text: "part one" }, { type: "text", text: "part two" }] }], { template: tpl });
  assert.equal(parts, renderChat([{ role: "user", content: "part one\npart two" }], { template: tpl }));
  assert.equal(renderChat([{ role: "assistant", content: null }], { template: DEFAULT_CHAT_TEMPLATE, addGenerationPrompt: false }), "<|im_start|>assistant\n<|im_end|>\n");
  assert.throws(() => renderChat([{ role: "user", content: [{ type: "image_url", image_url: {} }] }], { template: tpl }), /messages\[0\]\.content\[0\]: only \{type: "text", text\} parts/);
  assert.throws(() => renderChat([{ content: "x" }], { template: tpl }), /messages\[0\]\.role/);
  assert.throws(() => renderChat("hi", { template: tpl }), /messages must be an array/);
  assert.throws(() => new ChatTemplate("{% if %}", "broken.jinja"), (e: unknown) => e instanceof ChatTemplateError && /broken\.jinja: cannot parse/.test(e.message));
});

test("kwargs (enable_thinking) and tools reach the template; reserved names are refused", () => {
  const tpl =
    "{%- if tools %}{% for t in tools %}{{ t | tojson }}\n{% endfor %}{% endif %}" +
    "{%- for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}" +
    "{%- if add_generation_prompt %}<assistant>{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}";
  const msgs = [{ role: "user", content: "hi" }];
  assert.equal(renderChat(msgs, { template: tpl }), "<user>hi<assistant>");
  assert.equal(renderChat(msgs, { template: tpl, kwargs: { enable_thinking: false } }), "<user>hi<assistant><think>\n\n</think>\n\n");
  assert.equal(renderChat(msgs, { template: tpl, kwargs: { enable_thinking: true } }), "<user>hi<assistant>");
  const tools = [{ type: "function", function: { name: "f", parameters: { a: [1, 2.5, "é"] } } }];
  // expected text is Python's json.dumps(tool, ensure_ascii=False), transformers' tojson
  assert.equal(renderChat(msgs, { template: tpl, tools, addGenerationPrompt: false }), '{"type": "function", "function": {"name": "f", "parameters": {"a": [1, 2.5, "é"]}}}\n<user>hi');
  assert.throws(() => renderChat(msgs, { template: tpl, kwargs: { messages: [] } }), /kwargs\.messages would shadow/);
});

test("loadChatTemplate: chat_template.jinja, string, named list, bos/eos objects, default", () => {
  const dir = () => mkdtempSync(path.join(tmpdir(), "moe-chat-"));
  const cfg = (d: string, o: unknown) => writeFileSync(path.join(d, "tokenizer_config.json"), JSON.stringify(o));

  const a = dir();
  cfg(a, { chat_template: FIX.templates.mixtral!.template, bos_token: "<s>", eos_token: { __type: "AddedToken", content: "</s>" } });
  const la = loadChatTemplate(a);
  assert.deepEqual([la.template, la.bosToken, la.eosToken, la.isDefault, la.name], [FIX.templates.mixtral!.template, "<s>", "</s>", false, null]);
  assert.equal(renderChat([{ role: "user", content: "Hello" }], { template: la.template, bosToken: la.bosToken, eosToken: la.eosToken }), "<s>[INST] Hello [/INST]");

  writeFileSync(path.join(a, "chat_template.jinja"), "{{ 'from file' }}");
  const lj = loadChatTemplate(a);
  assert.deepEqual([lj.template, path.basename(lj.source)], ["{{ 'from file' }}", "chat_template.jinja"]);

  const b = dir();
  cfg(b, { chat_template: [{ name: "default", template: "D" }, { name: "tool_use", template: "T" }, { name: "rag", template: "R" }] });
  assert.equal(loadChatTemplate(b).template, "D");
  assert.equal(loadChatTemplate(b, { withTools: true }).template, "T");
  assert.deepEqual([loadChatTemplate(b, { name: "rag" }).template, loadChatTemplate(b, { name: "rag" }).name], ["R", "rag"]);
  assert.throws(() => loadChatTemplate(b, { name: "chatml" }), /no chat template named "chatml" \(it has "default", "tool_use", "rag"\)/);
  const c = dir();
  cfg(c, { chat_template: [{ name: "tool_use", template: "T" }] });
  assert.throws(() => loadChatTemplate(c), /no chat template named "default"/);

  const d = dir();
  cfg(d, { eos_token: "<|endoftext|>" });
  const ld = loadChatTemplate(d);
  assert.deepEqual([ld.template, ld.source, ld.isDefault, ld.eosToken], [DEFAULT_CHAT_TEMPLATE, "default", true, "<|endoftext|>"]);
  assert.throws(() => loadChatTemplate(d, { fallback: false }), /no chat template/);
  const e = dir();
  cfg(e, { chat_template: 5 });
  assert.throws(() => loadChatTemplate(e), /chat_template must be a string or a list/);
});
