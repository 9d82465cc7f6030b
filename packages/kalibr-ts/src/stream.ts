/** Streaming: the chunks of one call as an async iterator, and the completion they add up to. */

import type { ChatCompletion, ChatCompletionChunk, Decision, RoutedCompletion, ToolCall, Usage } from "./types.js";

/**
 * `for await (const chunk of router.stream(messages))`: OpenAI-shaped chunks of the chosen path (another path
 * is tried if one fails before its first chunk). `decision` is set before the first chunk; once the stream is
 * read to its end, `completion` holds the whole answer, routed and costed like `router.completion()`'s.
 */
export class CompletionStream implements AsyncIterable<ChatCompletionChunk> {
  decision: Decision | undefined;
  completion: RoutedCompletion | undefined;
  private started = false;

  constructor(private readonly source: (stream: CompletionStream) => AsyncGenerator<ChatCompletionChunk>) {}

  [Symbol.asyncIterator](): AsyncIterator<ChatCompletionChunk> {
    if (this.started) throw new TypeError("a CompletionStream can be read once: call router.stream() again");
    this.started = true;
    return this.source(this);
  }

  /** Read the rest of the stream and return the whole answer. */
  async finalCompletion(): Promise<RoutedCompletion> {
    for await (const _chunk of this) {
      // the chunks add up into this.completion
    }
    return this.completion!;
  }
}

/** Adds streamed chunks up into one chat completion. */
export class ChunkAggregator {
  private id = "";
  private model = "";
  private created = Math.floor(Date.now() / 1000);
  private content = "";
  private finishReason: string | null = null;
  private usage: Usage | undefined;
  private readonly toolCalls: ToolCall[] = [];

  add(chunk: ChatCompletionChunk): void {
    this.id ||= chunk.id ?? "";
    this.model ||= chunk.model ?? "";
    this.created = chunk.created ?? this.created;
    if (chunk.usage) this.usage = chunk.usage;
    for (const choice of chunk.choices ?? []) {
      this.content += choice.delta?.content ?? "";
      this.finishReason = choice.finish_reason ?? this.finishReason;
      for (const part of choice.delta?.tool_calls ?? []) {
        const call = (this.toolCalls[part.index] ??= {
          id: "",
          type: "function",
          function: { name: "", arguments: "" },
        });
        call.id ||= part.id ?? "";
        call.function.name ||= part.function?.name ?? "";
        call.function.arguments += part.function?.arguments ?? "";
      }
    }
  }

  result(fallbackModel: string): ChatCompletion {
    const message: ChatCompletion["choices"][number]["message"] = { role: "assistant", content: this.content };
    const calls = this.toolCalls.filter(Boolean);
    if (calls.length) message.tool_calls = calls;
    const completion: ChatCompletion = {
      id: this.id,
      object: "chat.completion",
      created: this.created,
      model: this.model || fallbackModel,
      choices: [{ index: 0, message, finish_reason: this.finishReason }],
    };
    if (this.usage) completion.usage = this.usage;
    return completion;
  }
}
