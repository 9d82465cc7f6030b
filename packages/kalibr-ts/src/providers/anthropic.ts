/**
 * The Anthropic Messages API. Messages and tools arrive in the OpenAI shape and answers leave in it.
 * Key: the path's `apiKey`, else `ANTHROPIC_API_KEY`; base URL: the path's `baseUrl`, else `ANTHROPIC_BASE_URL`.
 */

import { ProviderError, UserError } from "../errors.js";
import type { ChatCompletion, ChatCompletionChunk, Message, Tool, ToolCall, Usage } from "../types.js";
import { endpoint, errorMessageOf, textOf, type WireFormat } from "./base.js";

const DEFAULT_BASE_URL = "https://api.anthropic.com";
const API_VERSION = "2023-06-01";
const DEFAULT_MAX_TOKENS = 1024;
const FINISH_REASONS: Record<string, string> = {
  end_turn: "stop",
  max_tokens: "length",
  stop_sequence: "stop",
  tool_use: "tool_calls",
};

type Block = Record<string, unknown>;

export const anthropicMessages: WireFormat = {
  build(request) {
    const path = request.path;
    const [baseUrl, apiKey] = endpoint(path, "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", DEFAULT_BASE_URL);
    const {
      max_tokens,
      max_completion_tokens,
      stop,
      tools,
      tool_choice,
      response_format: _noJsonMode, // Anthropic has no JSON mode; structured output goes through tools
      stream_options: _noStreamOptions,
      ...rest
    } = request.params;
    const [system, messages] = toAnthropicMessages(request.messages);
    const body: Record<string, unknown> = {
      model: path.model,
      messages,
      max_tokens: max_tokens ?? max_completion_tokens ?? DEFAULT_MAX_TOKENS,
      ...rest,
    };
    if (system) body["system"] = system;
    if (stop !== undefined) body["stop_sequences"] = typeof stop === "string" ? [stop] : stop;
    const declared = (tools as Tool[] | undefined) ?? (path.tools.length ? [...path.tools] : undefined);
    if (declared?.length) body["tools"] = declared.map(toAnthropicTool);
    if (tool_choice !== undefined) body["tool_choice"] = toAnthropicToolChoice(tool_choice);
    if (request.stream) body["stream"] = true;
    const headers = { "x-api-key": apiKey, "anthropic-version": API_VERSION, "content-type": "application/json" };
    return { url: `${baseUrl}/v1/messages`, headers, body };
  },

  parse(body, request) {
    const texts: string[] = [];
    const calls: ToolCall[] = [];
    for (const block of (body["content"] as Block[] | undefined) ?? []) {
      if (block["type"] === "text") texts.push(String(block["text"] ?? ""));
      if (block["type"] === "tool_use") {
        const call = { name: String(block["name"] ?? ""), arguments: JSON.stringify(block["input"] ?? {}) };
        calls.push({ id: String(block["id"] ?? ""), type: "function", function: call });
      }
    }
    const message: ChatCompletion["choices"][number]["message"] = { role: "assistant", content: texts.join("") };
    if (calls.length) message.tool_calls = calls;
    return {
      id: String(body["id"] ?? ""),
      object: "chat.completion",
      created: Math.floor(Date.now() / 1000),
      model: String(body["model"] ?? request.path.model),
      choices: [{ index: 0, message, finish_reason: finishReason(body["stop_reason"]) }],
      usage: usageOf(body["usage"] as Block | undefined),
    };
  },

  eventParser(request) {
    let id = "";
    let model = request.path.model;
    let inputTokens = 0;
    const created = Math.floor(Date.now() / 1000);
    const toolIndex = new Map<number, number>();
    const chunk = (delta: ChatCompletionChunk["choices"][number]["delta"], finish: string | null = null) => ({
      id,
      object: "chat.completion.chunk" as const,
      created,
      model,
      choices: [{ index: 0, delta, finish_reason: finish }],
    });
    return (data, event) => {
      const payload = JSON.parse(data) as Block;
      const kind = payload["type"] ?? event;
      const index = Number(payload["index"] ?? 0);
      if (kind === "message_start") {
        const message = (payload["message"] ?? {}) as Block;
        id = String(message["id"] ?? "");
        model = String(message["model"] ?? model);
        inputTokens = Number((message["usage"] as Block | undefined)?.["input_tokens"] ?? 0);
        return chunk({ role: "assistant", content: "" });
      }
      if (kind === "content_block_start") {
        const block = (payload["content_block"] ?? {}) as Block;
        if (block["type"] !== "tool_use") return undefined;
        toolIndex.set(index, toolIndex.size);
        const start = { index: toolIndex.get(index)!, id: String(block["id"]), type: "function" as const };
        return chunk({ tool_calls: [{ ...start, function: { name: String(block["name"]), arguments: "" } }] });
      }
      if (kind === "content_block_delta") {
        const part = (payload["delta"] ?? {}) as Block;
        if (part["type"] === "text_delta") return chunk({ content: String(part["text"] ?? "") });
        if (part["type"] === "input_json_delta") {
          const argumentsPart = String(part["partial_json"] ?? "");
          return chunk({ tool_calls: [{ index: toolIndex.get(index) ?? 0, function: { arguments: argumentsPart } }] });
        }
        return undefined;
      }
      if (kind === "message_delta") {
        const outputTokens = Number((payload["usage"] as Block | undefined)?.["output_tokens"] ?? 0);
        const last: ChatCompletionChunk = chunk(
          {},
          finishReason((payload["delta"] as Block | undefined)?.["stop_reason"]),
        );
        last.usage = {
          prompt_tokens: inputTokens,
          completion_tokens: outputTokens,
          total_tokens: inputTokens + outputTokens,
        };
        return last;
      }
      if (kind === "error") {
        const message = ((payload["error"] ?? {}) as Block)["message"] ?? data;
        throw new ProviderError(`${JSON.stringify(request.path.model)} stream error: ${String(message)}`, {
          model: request.path.model,
        });
      }
      return undefined;
    };
  },

  errorMessage: errorMessageOf,
};

function finishReason(reason: unknown): string | null {
  if (reason === null || reason === undefined) return null;
  return FINISH_REASONS[String(reason)] ?? String(reason);
}

function usageOf(usage: Block | undefined): Usage {
  const input = Number(usage?.["input_tokens"] ?? 0);
  const output = Number(usage?.["output_tokens"] ?? 0);
  return { prompt_tokens: input, completion_tokens: output, total_tokens: input + output };
}

function toAnthropicTool(tool: Tool): Block {
  if ("input_schema" in tool) return { ...tool };
  const fn = tool.function ?? (tool as unknown as { name: string; description?: string; parameters?: Block });
  return {
    name: fn.name,
    description: fn.description ?? "",
    input_schema: fn.parameters ?? { type: "object", properties: {} },
  };
}

function toAnthropicToolChoice(choice: unknown): Block {
  if (choice === "required" || choice === "any") return { type: "any" };
  if (choice === "auto" || choice === null) return { type: "auto" };
  if (choice === "none") return { type: "none" };
  if (typeof choice === "string") return { type: "tool", name: choice };
  const name = (choice as { function?: { name?: string }; name?: string } | undefined)?.function?.name;
  if (name) return { type: "tool", name };
  throw new UserError(
    `unsupported tool_choice ${JSON.stringify(choice)}: use 'auto', 'required', 'none' or { function: { name } }`,
  );
}

/** OpenAI-shaped messages as Anthropic's system text and alternating user/assistant messages. */
export function toAnthropicMessages(messages: Message[]): [string, Block[]] {
  const system: string[] = [];
  const converted: Block[] = [];
  const append = (role: string, blocks: unknown[]) => {
    const last = converted[converted.length - 1];
    if (last && last["role"] === role) (last["content"] as unknown[]).push(...blocks);
    else converted.push({ role, content: [...blocks] });
  };
  for (const message of messages) {
    if (message.role === "system" || message.role === "developer") {
      system.push(textOf(message.content));
    } else if (message.role === "tool") {
      const result = { type: "tool_result", tool_use_id: message.tool_call_id ?? "", content: textOf(message.content) };
      append("user", [result]);
    } else if (message.role === "assistant") {
      const blocks: Block[] = [];
      const text = textOf(message.content);
      if (text) blocks.push({ type: "text", text });
      for (const call of message.tool_calls ?? []) {
        const input = call.function.arguments ? JSON.parse(call.function.arguments) : {};
        blocks.push({ type: "tool_use", id: call.id, name: call.function.name, input });
      }
      append("assistant", blocks.length ? blocks : [{ type: "text", text: "" }]);
    } else {
      const content = message.content;
      append("user", Array.isArray(content) ? content : [{ type: "text", text: textOf(content) }]);
    }
  }
  return [system.filter(Boolean).join("\n\n"), converted];
}
