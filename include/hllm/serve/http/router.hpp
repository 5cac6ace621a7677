// Routes: a method and a path pattern (an ECMAScript regex over the whole decoded path) to a
// handler, and where the handler runs — on the server's I/O thread (quick answers: it must never
// block) or on a worker thread (anything that waits for the engine or does heavy work).
#pragma once

#include <functional>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "hllm/serve/http/message.hpp"

namespace hllm::serve::http {

using Handler = std::function<void(Request&, Response&)>;

enum class RunOn { io_thread, worker };

class Router {
 public:
  struct Route {
    std::string method;
    std::regex pattern;
    Handler handler;
    RunOn run_on = RunOn::io_thread;
  };

  void add(std::string method, const std::string& pattern, Handler handler,
           RunOn run_on = RunOn::io_thread) {
    routes_.push_back({std::move(method), std::regex(pattern), std::move(handler), run_on});
  }

  // The route serving `request` (nullptr: none); fills request.matches when `matches` is set.
  const Route* find(Request& request, bool fill_matches = false) const {
    for (const Route& route : routes_) {
      if (route.method != request.method) continue;
      std::smatch match;
      if (!std::regex_match(request.path, match, route.pattern)) continue;
      if (fill_matches) {
        request.matches.clear();
        for (const auto& group : match) request.matches.push_back(group.str());
      }
      return &route;
    }
    return nullptr;
  }

 private:
  std::vector<Route> routes_;
};

}  // namespace hllm::serve::http
