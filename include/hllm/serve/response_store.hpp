// The Responses API's memory: what /v1/responses answered (store: true, OpenAI's default), kept in
// RAM so that a later request can continue it (previous_response_id), point at its items
// (item_reference, which the AI SDK sends for the calls it replays) or fetch it again
// (GET /v1/responses/{id}). Bounded: the oldest go first once more than HLLM_SERVE_STORED_RESPONSES
// responses or HLLM_SERVE_STORED_BYTES of JSON are kept; nothing survives a restart.
#pragma once

#include <cstddef>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>

namespace hllm::serve {

#ifndef HLLM_SERVE_STORED_RESPONSES
#define HLLM_SERVE_STORED_RESPONSES 1024
#endif
#ifndef HLLM_SERVE_STORED_BYTES
#define HLLM_SERVE_STORED_BYTES (size_t{256} << 20)
#endif

class ResponseStore {
 public:
  // A finished response: its whole conversation (input items, then its output items) and the
  // response object itself.
  void put(const std::string& id, nlohmann::ordered_json conversation,
           const nlohmann::json& response) {
    std::lock_guard lock(mutex_);
    for (const auto& item : response.value("output", nlohmann::json::array()))
      if (item.contains("id")) items_[item["id"].get<std::string>()] = {id, item};
    const size_t bytes = conversation.dump().size() + response.dump().size();
    responses_[id] = {std::move(conversation), response, bytes};
    bytes_ += bytes;
    order_.push_back(id);
    while (!order_.empty() &&
           (order_.size() > HLLM_SERVE_STORED_RESPONSES || bytes_ > HLLM_SERVE_STORED_BYTES)) {
      erase_locked(order_.front());
      order_.pop_front();
    }
  }

  // The items a continuation of response `id` starts from (its input, then its output).
  std::optional<nlohmann::ordered_json> conversation(const std::string& id) const {
    std::lock_guard lock(mutex_);
    const auto it = responses_.find(id);
    if (it == responses_.end()) return std::nullopt;
    return it->second.conversation;
  }

  std::optional<nlohmann::json> response(const std::string& id) const {
    std::lock_guard lock(mutex_);
    const auto it = responses_.find(id);
    if (it == responses_.end()) return std::nullopt;
    return it->second.response;
  }

  // An output item by its id ("msg_...", "fc_...").
  std::optional<nlohmann::ordered_json> item(const std::string& id) const {
    std::lock_guard lock(mutex_);
    const auto it = items_.find(id);
    if (it == items_.end()) return std::nullopt;
    return nlohmann::ordered_json::parse(it->second.second.dump());
  }

  bool erase(const std::string& id) {
    std::lock_guard lock(mutex_);
    return erase_locked(id);
  }

 private:
  struct Stored {
    nlohmann::ordered_json conversation;
    nlohmann::json response;
    size_t bytes = 0;
  };

  bool erase_locked(const std::string& id) {
    const auto it = responses_.find(id);
    if (it == responses_.end()) return false;
    for (const auto& item : it->second.response.value("output", nlohmann::json::array()))
      if (item.contains("id")) items_.erase(item["id"].get<std::string>());
    bytes_ -= it->second.bytes;
    responses_.erase(it);
    return true;
  }

  mutable std::mutex mutex_;
  std::unordered_map<std::string, Stored> responses_;
  std::unordered_map<std::string, std::pair<std::string, nlohmann::json>> items_;  // id -> item
  std::deque<std::string> order_;  // response ids, oldest first (erased ones stay until popped)
  size_t bytes_ = 0;               // of the responses kept
};

}  // namespace hllm::serve
