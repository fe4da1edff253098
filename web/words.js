// Server error codes (docs/protocol.md, "Errors") told to a person, in words.

const WORDS = {
  invalid_message: "The page sent something the server did not understand. Reload the page.",
  stream_not_started: "The server was not expecting audio yet. Press Start again.",
  stream_already_started: "A stream is already running.",
  unsupported_audio_format: "The server cannot take this microphone's audio format.",
  unsupported_language: "That language, or that pair of languages, is not installed on this server.",
  frame_too_large: "The page sent too much audio at once.",
  too_fast: "Audio arrived faster than real time, so some of it was skipped.",
  overloaded: "The server is busy right now.",
  session_timeout: "The connection was closed after a long silence.",
  stream_too_long: "This stream reached the longest the server allows; start a new one.",
  internal: "Something went wrong on the server.",
  unauthorized: "This server needs an API key or token. Enter one below.",
  forbidden: "This key is not allowed to stream audio.",
  rate_limited: "Too many requests in a minute; waiting a moment.",
  quota_exceeded: "Your audio allowance is used up (for today, or for streams at once).",
  payload_too_large: "That was more audio than the server takes at once.",
  not_found: "The server does not know that address.",
  session_expired: "The server no longer had this session; a new one was started.",
};

/**
 * A sentence for a person. Language errors keep the server's own message, which lists
 * what is installed.
 */
export function describe(code, message) {
  const words = WORDS[code];
  if (!words) return message || `The server reported an error (${code}).`;
  if (code === "unsupported_language" && message) return `${words} ${message}`;
  return words;
}

/** Errors after which trying again, unchanged, may work. */
export function retryable(code) {
  return ["overloaded", "rate_limited", "internal", "too_fast"].includes(code);
}
