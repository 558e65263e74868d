// Translates the Oniguruma regexes found in HF tokenizer.json pre-tokenizers (GPT-2, Llama-3, Qwen,
// GPT-4o, DeepSeek style) into JavaScript `u`-mode RegExps with the same matches.
// Not a general Oniguruma engine: constructs JavaScript cannot express or that this translator does
// not handle (possessive quantifiers, atomic groups, \G, \K, POSIX brackets, class intersections,
// case-insensitivity beyond ASCII literals) throw an error naming the construct — never a silent
// approximation.
//
// Semantics mapped (Oniguruma, Unicode encoding; checked against the Rust `tokenizers` crate):
//   \s = White_Space (includes U+0085, excludes U+FEFF, unlike JS \s)   \d = \p{Nd}
//   \w = Letter | Mark | Number | Connector_Punctuation                  .  = anything but \n
//   ^ / $ = line anchors (only \n ends a line)                           (?i:…) = ASCII case folding
//   \p{Han}-style script names → \p{Script=Han}                          \x{HHHH} → \u{HHHH}

const WS = "\\p{White_Space}";
const NOT_WS = "\\P{White_Space}";
const WORD_IN_CLASS = "\\p{L}\\p{M}\\p{N}\\p{Pc}";

/** Error for a pattern this translator cannot reproduce exactly. */
export class UnsupportedRegexError extends Error {}

function fail(pattern: string, at: number, what: string): never {
  throw new UnsupportedRegexError(`unsupported regex construct ${what} at index ${at} in ${JSON.stringify(pattern)}`);
}

/** `\p{Name}` → a JS property escape (general category, binary property, or script). */
function propertyEscape(pattern: string, at: number, negated: boolean, name: string): string {
  if (name.startsWith("^")) return propertyEscape(pattern, at, !negated, name.slice(1));
  const p = negated ? "P" : "p";
  for (const cand of [name, `Script=${name}`]) {
    try {
      new RegExp(`\\${p}{${cand}}`, "u");
      return `\\${p}{${cand}}`;
    } catch {
      /* try the next spelling */
    }
  }
  return fail(pattern, at, `\\${p}{${name}} (unknown property)`);
}

/** Characters that may be escaped with a backslash in a JS `u`-mode pattern. */
const JS_SYNTAX = new Set("^$\\.*+?()[]{}|/-");

/**
 * Translates one escape sequence starting at `pattern[i] === "\\"`.
 * Returns the JS text and the index after the escape. `inClass` selects class-safe output.
 */
function translateEscape(pattern: string, i: number, inClass: boolean, fold: boolean): [string, number] {
  const c = pattern[i + 1];
  if (c === undefined) fail(pattern, i, "trailing backslash");
  switch (c) {
    case "s":
      return [WS, i + 2];
    case "S":
      return [NOT_WS, i + 2];
    case "d":
      return ["\\p{Nd}", i + 2];
    case "D":
      return ["\\P{Nd}", i + 2];
    case "w":
      return [inClass ? WORD_IN_CLASS : `[${WORD_IN_CLASS}]`, i + 2];
    case "W":
      if (inClass) fail(pattern, i, "\\W inside a character class");
      return [`[^${WORD_IN_CLASS}]`, i + 2];
    case "p":
    case "P": {
      const m = /^\{([^}]*)\}/.exec(pattern.slice(i + 2));
      if (!m) fail(pattern, i, `\\${c} without {name}`);
      return [propertyEscape(pattern, i, c === "P", m[1]!), i + 2 + m[0].length];
    }
    case "x": {
      const braced = /^\{([0-9A-Fa-f]{1,8})\}/.exec(pattern.slice(i + 2));
      if (braced) return [codePointAtom(parseInt(braced[1]!, 16), inClass, fold), i + 2 + braced[0].length];
      const two = /^[0-9A-Fa-f]{2}/.exec(pattern.slice(i + 2));
      if (!two) fail(pattern, i, "\\x without hex digits");
      return [codePointAtom(parseInt(two[0], 16), inClass, fold), i + 4];
    }
    case "u": {
      const four = /^[0-9A-Fa-f]{4}/.exec(pattern.slice(i + 2));
      if (!four) fail(pattern, i, "\\u without 4 hex digits");
      return [codePointAtom(parseInt(four[0], 16), inClass, fold), i + 6];
    }
    case "t":
    case "n":
    case "r":
    case "f":
    case "v":
      return [`\\${c}`, i + 2];
    case "a":
      return ["\\x07", i + 2];
    case "e":
      return ["\\x1b", i + 2];
    case "0":
      return ["\\0", i + 2];
  }
  if (/[A-Za-z0-9]/.test(c)) fail(pattern, i, `\\${c}`);
  // Identity escape of punctuation: JS `u` mode only accepts syntax characters.
  const cp = pattern.codePointAt(i + 1)!;
  const len = cp > 0xffff ? 2 : 1;
  if (JS_SYNTAX.has(c)) return [`\\${c}`, i + 2];
  return [codePointAtom(cp, inClass, fold), i + 1 + len];
}

function escapeCodePoint(cp: number): string {
  return `\\u{${cp.toString(16)}}`;
}

/** One code point as a JS atom; with `fold`, ASCII letters match both cases. */
function codePointAtom(cp: number, inClass: boolean, fold: boolean): string {
  const ch = String.fromCodePoint(cp);
  if (fold && /[A-Za-z]/.test(ch)) {
    const both = ch.toLowerCase() + ch.toUpperCase();
    return inClass ? both : `[${both}]`;
  }
  if (fold && /\p{L}/u.test(ch) && ch.toLowerCase() !== ch.toUpperCase()) {
    throw new UnsupportedRegexError(`unsupported regex construct: case-insensitive non-ASCII letter ${JSON.stringify(ch)}`);
  }
  return escapeCodePoint(cp);
}

/** Translates a character class starting at `pattern[i] === "["`. */
function translateClass(pattern: string, i: number, fold: boolean): [string, number] {
  let out = "[";
  let j = i + 1;
  if (pattern[j] === "^") {
    out += "^";
    j++;
  }
  let first = true;
  while (j < pattern.length) {
    const c = pattern[j]!;
    if (c === "]" && !first) return [out + "]", j + 1];
    first = false;
    if (c === "[") fail(pattern, j, "nested character class or POSIX bracket");
    if (c === "&" && pattern[j + 1] === "&") fail(pattern, j, "class intersection &&");
    if (c === "\\") {
      const [t, next] = translateEscape(pattern, j, true, fold);
      out += t;
      j = next;
      continue;
    }
    if (c === "-") {
      // A range dash between two atoms, or a literal dash at the edges.
      out += pattern[j + 1] === "]" || out.endsWith("[") || out.endsWith("[^") ? "\\-" : "-";
      j++;
      continue;
    }
    const cp = pattern.codePointAt(j)!;
    const len = cp > 0xffff ? 2 : 1;
    if (fold && /[A-Za-z]/.test(c) && (pattern[j + 1] === "-" || out.endsWith("-"))) {
      fail(pattern, j, "case-insensitive letter range in a class");
    }
    out += codePointAtom(cp, true, fold);
    j += len;
  }
  return fail(pattern, i, "unterminated character class");
}

/** Translates an Oniguruma pattern to JS `u`-mode source. Throws UnsupportedRegexError. */
export function onigToJsSource(pattern: string): string {
  let out = "";
  const foldStack: boolean[] = [];
  let fold = false;
  let lastWasQuantifier = false;
  for (let i = 0; i < pattern.length; ) {
    const c = pattern[i]!;
    let quant = false;
    if (c === "\\") {
      if (/^\\[AzZGKRXbBhHN]/.test(pattern.slice(i, i + 2))) fail(pattern, i, pattern.slice(i, i + 2));
      const [t, next] = translateEscape(pattern, i, false, fold);
      out += t;
      i = next;
    } else if (c === "[") {
      const [t, next] = translateClass(pattern, i, fold);
      out += t;
      i = next;
    } else if (c === "(") {
      const rest = pattern.slice(i);
      foldStack.push(fold);
      if (rest.startsWith("(?i:")) {
        fold = true;
        out += "(?:";
        i += 4;
      } else if (rest.startsWith("(?-i:")) {
        fold = false;
        out += "(?:";
        i += 5;
      } else if (/^\(\?(?::|=|!|<=|<!)/.test(rest)) {
        const m = /^\(\?(?::|=|!|<=|<!)/.exec(rest)!;
        out += m[0];
        i += m[0].length;
      } else if (rest.startsWith("(?<") && /^\(\?<[A-Za-z_]\w*>/.test(rest)) {
        const m = /^\(\?<[A-Za-z_]\w*>/.exec(rest)!;
        out += m[0];
        i += m[0].length;
      } else if (rest.startsWith("(?")) {
        fail(pattern, i, rest.slice(0, 3) + "… group");
      } else {
        out += "(";
        i++;
      }
    } else if (c === ")") {
      if (!foldStack.length) fail(pattern, i, "unbalanced )");
      fold = foldStack.pop()!;
      out += ")";
      i++;
    } else if (c === "*" || c === "+" || c === "?") {
      if (lastWasQuantifier && c === "+") fail(pattern, i, "possessive quantifier");
      if (lastWasQuantifier && c === "?") {
        out += "?"; // lazy
        i++;
      } else {
        out += c;
        i++;
        quant = true;
      }
    } else if (c === "{") {
      const m = /^\{(\d+)(,(\d*))?\}|^\{,(\d+)\}/.exec(pattern.slice(i));
      if (!m) {
        out += "\\{";
        i++;
      } else {
        out += m[4] !== undefined ? `{0,${m[4]}}` : m[0];
        i += m[0].length;
        quant = true;
        // Oniguruma reads `{n}+` as a stacked quantifier; JS has no equivalent syntax.
        if (pattern[i] === "+") fail(pattern, i, "quantifier stacked on {n,m}");
      }
    } else if (c === "}") {
      out += "\\}";
      i++;
    } else if (c === ".") {
      out += "[^\\n]";
      i++;
    } else if (c === "^") {
      out += "(?:(?<![\\s\\S])|(?<=\\n))";
      i++;
    } else if (c === "$") {
      out += "(?:(?=\\n)|(?![\\s\\S]))";
      i++;
    } else if (c === "|") {
      out += "|";
      i++;
    } else if (c === "/") {
      out += "\\/";
      i++;
    } else {
      const cp = pattern.codePointAt(i)!;
      out += codePointAtom(cp, false, fold);
      i += cp > 0xffff ? 2 : 1;
    }
    lastWasQuantifier = quant;
  }
  if (foldStack.length) throw new UnsupportedRegexError(`unbalanced ( in ${JSON.stringify(pattern)}`);
  return out;
}

/** Compiles an Oniguruma pattern to a global, unicode JS RegExp with the same matches. */
export function onigToJs(pattern: string): RegExp {
  const src = onigToJsSource(pattern);
  try {
    return new RegExp(src, "gu");
  } catch (e) {
    throw new UnsupportedRegexError(`cannot compile ${JSON.stringify(pattern)} (as ${JSON.stringify(src)}): ${(e as Error).message}`);
  }
}
