// Stop strings on streamed text. Text arrives in pieces (complete UTF-8, from StreamDecoder); a
// stop string may span pieces. The filter hands out only text that can no longer be the start of
// a stop string, and on a match returns the text before it and reports the stop:
//
//   pieces:  "Hello wo" | "rld. ST" | "OP more"        stop = {"STOP"}
//   out:     "Hello wo" | "rld. "   | ""  -> stopped   (" ST" held back until "OP" came)
//
// Cuts are always on character boundaries: the text is valid UTF-8 and every stop string is too
// (JSON strings are), and a UTF-8 string can only match at a lead byte.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hllm::serve {

class StopTextFilter {
 public:
  explicit StopTextFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Adds `piece`; returns the text now safe to hand out. After a match, stopped() is true and
  // later calls return "".
  std::string push(std::string_view piece) {
    if (stopped_) return "";
    held_ += piece;
    if (stops_.empty()) return std::exchange(held_, std::string());
    size_t first = std::string::npos;
    for (const auto& s : stops_) first = std::min(first, held_.find(s));
    if (first != std::string::npos) {
      stopped_ = true;
      std::string out = held_.substr(0, first);
      held_.clear();
      return out;
    }
    const size_t keep = longest_partial_match();
    std::string out = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return out;
  }

  // End of the text: whatever is held back (a stop string's prefix that never completed).
  std::string finish() {
    if (stopped_) return "";
    return std::exchange(held_, std::string());
  }

  bool stopped() const { return stopped_; }

 private:
  // The longest suffix of held_ that is a proper prefix of some stop string.
  size_t longest_partial_match() const {
    size_t best = 0;
    for (const auto& s : stops_) {
      for (size_t len = std::min(s.size() - 1, held_.size()); len > best; --len)
        if (std::string_view(held_).substr(held_.size() - len) ==
            std::string_view(s).substr(0, len)) {
          best = len;
          break;
        }
    }
    return best;
  }

  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace hllm::serve
