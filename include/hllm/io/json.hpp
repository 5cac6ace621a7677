// Reading JSON files (config.json and friends) with errors that name the file and the field.
#pragma once

#include <algorithm>
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

// A JSON value as an error message shows it: scalars and flat arrays of scalars as written (a
// shape, data_offsets), anything nested as its kind and size, at most ~120 bytes (cut at a UTF-8
// boundary). Never json::dump() of a whole untrusted value: it recurses once per nesting level,
// so 100,000 nested brackets (200 KB of input) overflow the stack.
inline std::string describe_json(const json& value) {
  constexpr size_t MAX_BYTES = 120;
  const bool flat = std::all_of(value.begin(), value.end(),
                                [](const json& element) { return element.is_primitive(); });
  std::string text;
  if (value.is_primitive() || (value.is_array() && flat && value.size() <= 16))
    text = value.dump();
  else if (value.is_array())
    text = "an array of " + std::to_string(value.size()) + " values";
  else
    text = "an object with " + std::to_string(value.size()) + " keys";
  if (text.size() > MAX_BYTES) {
    size_t cut = MAX_BYTES;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    text = text.substr(0, cut) + "...";
  }
  return text;
}

// A JSON object together with the file it came from, for messages like
// "config.json: field \"num_hidden_layers\" must be a positive integer".
struct JsonFields {
  const json& object;
  std::string where;

  bool has(const char* key) const { return object.contains(key) && !object.at(key).is_null(); }

  [[noreturn]] void wrong(const char* key, const char* expected) const {
    const std::string found = object.contains(key) ? describe_json(object.at(key)) : "nothing";
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
