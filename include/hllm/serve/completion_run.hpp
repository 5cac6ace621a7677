// One completion's generated ids, from the engine thread to the response: the Channel the engine's
// callbacks fill, and drive(), which the handler thread runs to take the ids out, turn them into
// each choice's output (serve/choice_output.hpp) and hand that to a CompletionSink — the writer of
// one API's response shape (chat/completions, or /v1/responses), streamed or whole.
//
//   engine thread: on_prompt_logprob / on_logprob / on_token / on_finish ──► Channel
//   handler:       drive(): Channel ──► ChoiceOutput per choice ──► sink.piece / sink.end
//
// A stop string ends its choice at once (the engine request is aborted; the choice ends as
// "stop"); the client going away (a sink write fails) makes drive() return false.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "hllm/engine/engine.hpp"
#include "hllm/serve/choice_output.hpp"

namespace hllm::serve {

// The ids of a completion's choices (one engine request each), their logprobs, the prompt's
// logprobs, and how each choice ended.
struct Channel {
  struct Item {
    int choice = 0;
    int32_t id = 0;
    std::optional<TokenLogprob> logprob;
  };
  struct End {
    bool finished = false;
    FinishReason reason = FinishReason::cancelled;
    std::string error;
  };

  explicit Channel(int choices)
      : ends(static_cast<size_t>(choices)),
        next_logprob(static_cast<size_t>(choices)),
        stopped(static_cast<size_t>(choices)) {}

  std::mutex mutex;
  std::condition_variable ready;
  std::vector<Item> items;                    // generated, not yet taken by the handler
  std::vector<TokenLogprob> prompt_logprobs;  // positions 1.., not yet taken
  std::vector<End> ends;
  size_t n_finished = 0;                                  // how many of ends are finished
  std::vector<std::optional<TokenLogprob>> next_logprob;  // each choice's, until its id comes
  std::atomic<bool> cancelled{false};      // the handler gave up: on_token answers false
  std::vector<std::atomic<bool>> stopped;  // each choice: a stop string ended it (handler sets)

  bool stopped_by_text(int choice) const { return stopped[static_cast<size_t>(choice)].load(); }

  void logprob(int choice, const TokenLogprob& lp) {
    std::lock_guard lock(mutex);
    next_logprob[static_cast<size_t>(choice)] = lp;
  }
  void prompt_logprob(const TokenLogprob& lp) {
    std::lock_guard lock(mutex);
    prompt_logprobs.push_back(lp);
  }
  bool push(int choice, int32_t id) {
    if (cancelled.load()) return false;
    std::lock_guard lock(mutex);
    items.push_back({choice, id, std::exchange(next_logprob[static_cast<size_t>(choice)], {})});
    ready.notify_one();
    return true;
  }
  void finish(int choice, FinishReason r, const std::string& e) {
    std::lock_guard lock(mutex);
    ends[static_cast<size_t>(choice)] = {true, r, e};
    ++n_finished;
    ready.notify_one();
  }
};

// How one choice ended, as a response tells it.
struct ChoiceEnd {
  FinishReason reason = FinishReason::cancelled;
  std::string error;  // set: it failed (or was cancelled)
  // "stop" (a stop id or string), "length", or "tool_calls" when the choice made a call.
  std::string finish_reason(const ChoiceOutput& out) const {
    if (reason == FinishReason::length) return "length";
    return out.tool_call() ? "tool_calls" : "stop";
  }
};

// The writer of one response shape. Each call returns false when the client is gone.
class CompletionSink {
 public:
  virtual ~CompletionSink() = default;
  // Text of `choice` that may go out now (its logprobs wait in `out`).
  virtual bool piece(int choice, const std::string& text, ChoiceOutput& out) = 0;
  // `choice` ended without an error (its last text came through piece() before).
  virtual bool end(int choice, ChoiceOutput& out, const ChoiceEnd& end) = 0;
  // Called while waiting: a heartbeat when nothing was written for a while.
  virtual bool idle() = 0;
};

// What drive() works on.
struct Generation {
  Engine* engine = nullptr;
  std::vector<uint64_t> engine_ids;  // one per choice
  std::shared_ptr<Channel> channel;
  const std::atomic<bool>* stopping = nullptr;  // the server is shutting down

  void abort_all() const {
    for (uint64_t id : engine_ids) engine->abort(id);
  }
};

// Runs until every choice ended. `before_first` (may be empty) runs once, before the first text,
// with the prompt's logprobs (all of them have come by then). Fills `ends`; false: client gone.
inline bool drive(Generation& g, std::vector<ChoiceOutput>& outputs, CompletionSink& sink,
                  const std::function<bool(const std::vector<TokenLogprob>&)>& before_first,
                  std::vector<ChoiceEnd>& ends) {
  const size_t n = outputs.size();
  ends.assign(n, {});
  std::vector<bool> done(n, false), stopped_by_text(n, false);
  bool started = !before_first;
  std::vector<Channel::Item> items;
  std::vector<TokenLogprob> prompt_logprobs;
  std::vector<Channel::End> ended;
  size_t seen_finished = 0;  // a choice's end wakes the loop at once, n > 1 too
  while (true) {
    {
      std::unique_lock lock(g.channel->mutex);
      g.channel->ready.wait_for(lock, std::chrono::milliseconds(250), [&] {
        return !g.channel->items.empty() || g.channel->n_finished != seen_finished;
      });
      seen_finished = g.channel->n_finished;
      items.swap(g.channel->items);
      g.channel->items.clear();
      for (auto& lp : g.channel->prompt_logprobs) prompt_logprobs.push_back(std::move(lp));
      g.channel->prompt_logprobs.clear();
      ended = g.channel->ends;
    }
    const bool news = !items.empty() || std::any_of(ended.begin(), ended.end(),
                                                    [](const auto& e) { return e.finished; });
    if (!started && news) {
      started = true;
      if (!before_first(prompt_logprobs)) return false;
    }
    for (const Channel::Item& item : items) {
      const auto i = static_cast<size_t>(item.choice);
      if (done[i] || outputs[i].stopped()) continue;
      if (!sink.piece(item.choice,
                      outputs[i].push(item.id, item.logprob ? &*item.logprob : nullptr),
                      outputs[i]))
        return false;
      if (outputs[i].stopped()) {  // a stop string: this choice is done, whatever the engine does
        stopped_by_text[i] = true;
        g.channel->stopped[i] = true;  // before the abort: its end counts as "stop"
        g.engine->abort(g.engine_ids[i]);
      }
    }
    items.clear();
    for (size_t i = 0; i < n; ++i) {
      if (done[i] || !ended[i].finished) continue;  // (after a stop string: its abort's end)
      done[i] = true;
      ends[i] = {ended[i].reason, ended[i].error};
      if (!sink.piece(static_cast<int>(i), outputs[i].finish(), outputs[i])) return false;
      if (stopped_by_text[i] || outputs[i].stopped()) ends[i] = {FinishReason::stop, ""};
      if (ends[i].reason == FinishReason::cancelled && ends[i].error.empty())
        ends[i].error =
            g.stopping->load() ? "the server is shutting down" : "the request was cancelled";
      if (ends[i].error.empty() && !sink.end(static_cast<int>(i), outputs[i], ends[i]))
        return false;
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) return true;
    if (g.stopping->load()) {
      g.channel->cancelled = true;
      g.abort_all();
    }
    if (!sink.idle()) return false;
  }
}

}  // namespace hllm::serve
