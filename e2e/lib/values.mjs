// Test values and small assertion helpers shared by the test files.

import assert from 'node:assert/strict';

/**
 * Text that trips naive encoders: accents, CJK, Cyrillic, an emoji (a UTF-16 surrogate pair),
 * a ZWJ sequence, quotes, a backslash, control characters including NUL and the JSON
 * protocol's record separator (0x1E), and U+2028/U+2029.
 */
export const UNICODE_TEXT =
  'héllo wörld — 你好, мир! 🚀 👩‍💻 "quoted" \\back\\slash\n\ttab \u001e rs \u0000 nul \u2028\u2029 end';

/** 10 240 UTF-16 code units (16 640 UTF-8 bytes): well under the 32 KiB default limit. */
export const LARGE_TEXT = 'abc-ü€😀'.repeat(1280);

/** Asserts that `text` contains `part`, showing the whole text when it does not. */
export function assertIncludes(text, part) {
  assert.ok(
    typeof text === 'string' && text.includes(part),
    `expected ${JSON.stringify(text)} to contain ${JSON.stringify(part)}`,
  );
}
