// Reading JSON files (config.json and friends) with errors that name the file and the field.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>

#include "hllm/core/error.hpp"

namespace hllm {

using json = nlohmann::json;

inline json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open ", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return json::parse(text.str());
  } catch (const json::exception& e) {
    fail(path.string(), ": not valid JSON (", e.what(), ")");
  }
}

// A JSON object together with the file it came from, for messages like
// "config.json: field \"num_hidden_layers\" must be a positive integer".
struct JsonFields {
  const json& object;
  std::string where;

  bool has(const char* key) const { return object.contains(key) && !object.at(key).is_null(); }

  [[noreturn]] void wrong(const char* key, const char* expected) const {
    const std::string found = object.contains(key) ? object.at(key).dump() : "nothing";
    fail(where, ": field \"", key, "\" must be ", expected, " (found ", found, ")");
  }

  int64_t integer(const char* key) const {
    if (!has(key) || !object.at(key).is_number_integer()) wrong(key, "an integer");
    // An unsigned value above INT64_MAX would wrap to a negative one (2^64 - 1 -> -1).
    if (object.at(key).is_number_unsigned() && object.at(key).get<uint64_t>() > uint64_t{INT64_MAX})
      wrong(key, "an integer below 2^63");
    return object.at(key).get<int64_t>();
  }
  int64_t positive_integer(const char* key) const {
    const int64_t value = has(key) && object.at(key).is_number_integer() ? integer(key) : 0;
    if (value <= 0) wrong(key, "a positive integer");
    return value;
  }
  double number(const char* key) const {
    if (!has(key) || !object.at(key).is_number()) wrong(key, "a number");
    return object.at(key).get<double>();
  }
  double number_or(const char* key, double fallback) const {
    return has(key) ? number(key) : fallback;
  }
  std::optional<double> optional_number(const char* key) const {
    if (!has(key)) return std::nullopt;
    return number(key);
  }
  bool boolean_or(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!object.at(key).is_boolean()) wrong(key, "true or false");
    return object.at(key).get<bool>();
  }
  std::string string_or(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!object.at(key).is_string()) wrong(key, "a string");
    return object.at(key).get<std::string>();
  }
};

}  // namespace hllm
