// Fitting a chat conversation into the context (`moe chat`): when the rendered conversation plus
// the room kept for the reply exceeds --max-model-len, the oldest turns are dropped whole (a user
// message and the replies after it; the leading system messages stay), instead of cutting the
// rendered template in the middle. A newest message that does not fit even alone is refused.
// Not: the template rendering (chat.ts) or the server's rule (a prompt over the context is a 400).

export interface ChatMessage {
  role: string;
  content: string;
}

export type ChatFit =
  | { ok: true; ids: number[]; messages: ChatMessage[]; dropped: number }
  | { ok: false; tokens: number };

/**
 * The longest suffix of whole turns of `messages` (after its leading system messages) whose
 * prompt (`encode`: render + tokenize) leaves `reserve` tokens of `maxModelLen` for the reply;
 * the newest user turn alone is kept while it leaves at least one token. ok: false (with its
 * token count) when even that does not fit.
 */
export function fitChat(messages: readonly ChatMessage[], encode: (m: ChatMessage[]) => number[], maxModelLen: number, reserve: number): ChatFit {
  let s = 0;
  while (s < messages.length && messages[s]!.role === "system") s++;
  const system = messages.slice(0, s);
  let rest = messages.slice(s);
  let dropped = 0;
  for (;;) {
    const ids = encode([...system, ...rest]);
    if (ids.length + reserve <= maxModelLen) return { ok: true, ids, messages: [...system, ...rest], dropped };
    // the next user message after the first one starts the next turn
    const next = rest.findIndex((m, i) => i > 0 && m.role === "user");
    if (next < 0) return ids.length < maxModelLen ? { ok: true, ids, messages: [...system, ...rest], dropped } : { ok: false, tokens: ids.length };
    rest = rest.slice(next);
    dropped++;
  }
}
