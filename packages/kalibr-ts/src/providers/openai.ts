/**
 * OpenAI-compatible chat completions: OpenAI, vLLM, Ollama, most gateways, the Kalibr sandbox.
 * Key: the path's `apiKey`, else `OPENAI_API_KEY`; base URL: the path's `baseUrl`, else `OPENAI_BASE_URL`.
 */

import type { ChatCompletion, ChatCompletionChunk } from "../types.js";
import { endpoint, errorMessageOf, type WireFormat } from "./base.js";

const DEFAULT_BASE_URL = "https://api.openai.com/v1";

export const openaiChat: WireFormat = {
  build(request) {
    const [baseUrl, apiKey] = endpoint(request.path, "OPENAI_API_KEY", "OPENAI_BASE_URL", DEFAULT_BASE_URL);
    const body: Record<string, unknown> = { model: request.path.model, messages: request.messages, ...request.params };
    if (request.stream) {
      body["stream"] = true;
      body["stream_options"] ??= { include_usage: true };
    }
    const headers = { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" };
    return { url: `${baseUrl}/chat/completions`, headers, body };
  },

  parse(body) {
    return body as unknown as ChatCompletion;
  },

  eventParser() {
    return (data) => (data.trim() === "[DONE]" ? undefined : (JSON.parse(data) as ChatCompletionChunk));
  },

  errorMessage: errorMessageOf,
};
