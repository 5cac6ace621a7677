// hllm::grammar::Grammar — an immutable context-free grammar over BYTES: rules of alternatives of
// sequences of elements, each element a byte-set terminal (matches one byte) or a rule reference;
// and GrammarBuilder, which GBNF (grammar.hpp) and JSON Schema (json_schema.hpp) are compiled with.
//
//   rules()[r]       name + alternatives: the start position of each sequence in elements()
//   elements()       every sequence back to back, each closed by an `end` element:
//
//                      pos:  0        1        2      3        4
//                           [bytes 3][rule 7] [end] [bytes 0] [end]
//                            ^ alternative "x value"  ^ alternative "y"
//
//   byte_sets()[i]   256-bit sets of bytes
//
// Code points never appear: character classes are lowered to UTF-8 byte sequences when they are
// built (utf8_ranges.hpp), so only valid UTF-8 can ever match. Repetitions (x*, x+, x?, x{m,n})
// become helper rules that recurse on the RIGHT (R ::= x R | ""), so a recognizer's stack does
// not grow while it repeats. build() refuses left recursion (a rule that can reach itself before
// matching a byte), which a top-down recognizer would expand forever.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/grammar/utf8_ranges.hpp"

#ifndef HLLM_GRAMMAR_MAX_RULES
#define HLLM_GRAMMAR_MAX_RULES 8192  // rules of one grammar, helper rules of repetitions included
#endif

namespace hllm::grammar {

struct ByteSet {
  std::array<uint64_t, 4> words{};  // bit b of words[b / 64]: byte b is in the set

  bool contains(uint8_t b) const { return (words[b >> 6] >> (b & 63)) & 1; }
  void add(uint8_t lo, uint8_t hi) {
    for (unsigned b = lo; b <= hi; ++b) words[b >> 6] |= uint64_t{1} << (b & 63);
  }
  bool operator==(const ByteSet&) const = default;
};

struct Element {
  enum class Kind : uint8_t { end, bytes, rule };
  Kind kind = Kind::end;
  uint32_t index = 0;  // bytes: into Grammar::byte_sets(); rule: into Grammar::rules()
  bool operator==(const Element&) const = default;
};

using Sequence = std::vector<Element>;  // one alternative, without its `end`

struct Rule {
  std::string name;
  std::vector<uint32_t> alternatives;  // start positions in Grammar::elements()
};

class Grammar {
 public:
  const std::vector<Rule>& rules() const { return rules_; }
  const std::vector<Element>& elements() const { return elements_; }
  const std::vector<ByteSet>& byte_sets() const { return byte_sets_; }
  uint32_t root() const { return root_; }

 private:
  friend class GrammarBuilder;
  std::vector<Rule> rules_;
  std::vector<Element> elements_;
  std::vector<ByteSet> byte_sets_;
  uint32_t root_ = 0;
};

// Builds a Grammar rule by rule. Rules may be referenced before they are defined (recursion);
// build() checks that every referenced rule is defined and that none is left-recursive.
class GrammarBuilder {
 public:
  static constexpr uint32_t UNBOUNDED = std::numeric_limits<uint32_t>::max();
  static constexpr uint32_t MAX_REPEAT = 1 << 16;  // bound of {m,n}: each count is a helper rule

  // The rule called `name`, declared on first use.
  uint32_t rule(std::string_view name) {
    const auto it = by_name_.find(std::string(name));
    if (it != by_name_.end()) return it->second;
    const auto id = static_cast<uint32_t>(names_.size());
    names_.emplace_back(name);
    definitions_.emplace_back();
    defined_.push_back(false);
    by_name_.emplace(std::string(name), id);
    return id;
  }
  // A new rule named after `base` ("value" -> "value_3").
  uint32_t fresh_rule(std::string_view base) {
    std::string name;
    do name = detail::str_cat(base, "_", ++fresh_count_);
    while (by_name_.contains(name));
    return rule(name);
  }
  bool defined(uint32_t rule) const { return defined_[rule]; }
  const std::string& name(uint32_t rule) const { return names_[rule]; }

  void define(uint32_t rule, std::vector<Sequence> alternatives) {
    if (defined_[rule]) fail("grammar: rule '", names_[rule], "' is defined twice");
    definitions_[rule] = std::move(alternatives);
    defined_[rule] = true;
  }

  static Element ref(uint32_t rule) { return {Element::Kind::rule, rule}; }

  // The terminal matching one byte of `set` (equal sets are stored once).
  Element bytes(const ByteSet& set) {
    const auto it = std::find(byte_sets_.begin(), byte_sets_.end(), set);
    const auto index = static_cast<uint32_t>(it - byte_sets_.begin());
    if (it == byte_sets_.end()) byte_sets_.push_back(set);
    return {Element::Kind::bytes, index};
  }
  Element byte(uint8_t b) {
    ByteSet set;
    set.add(b, b);
    return bytes(set);
  }
  Sequence literal(std::string_view text) {
    Sequence seq;
    for (const char c : text) seq.push_back(byte(static_cast<uint8_t>(c)));
    return seq;
  }

  // One code point of `ranges` (any order, may overlap; surrogates are dropped), as valid UTF-8.
  Element code_points(std::vector<CodePointRange> ranges) {
    std::sort(ranges.begin(), ranges.end(), [](auto a, auto b) { return a.first < b.first; });
    std::vector<CodePointRange> merged;
    for (const CodePointRange r : ranges) {
      if (!merged.empty() && r.first <= merged.back().last + 1) {
        merged.back().last = std::max(merged.back().last, r.last);
      } else {
        merged.push_back(r);
      }
    }
    if (const auto it = classes_.find(merged); it != classes_.end()) return it->second;
    ByteSet single;  // the one-byte encodings, as one terminal
    bool any_single = false;
    std::vector<Sequence> alternatives;
    for (const CodePointRange r : merged) {
      utf8_sequences(r.first, r.last, [&](std::span<const ByteRange> seq) {
        if (seq.size() == 1) {
          single.add(seq[0].lo, seq[0].hi);
          any_single = true;
          return;
        }
        Sequence alt;
        for (const ByteRange br : seq) {
          ByteSet set;
          set.add(br.lo, br.hi);
          alt.push_back(bytes(set));
        }
        alternatives.push_back(std::move(alt));
      });
    }
    if (!any_single && alternatives.empty()) fail("grammar: empty character class");
    Element out;
    if (alternatives.empty()) {
      out = bytes(single);
    } else {
      if (any_single) alternatives.insert(alternatives.begin(), Sequence{bytes(single)});
      const uint32_t r = fresh_rule("char");
      define(r, std::move(alternatives));
      out = ref(r);
    }
    classes_.emplace(std::move(merged), out);
    return out;
  }

  // `item` repeated min..max times (max may be UNBOUNDED), as one element named after `base`.
  Element repeat(Sequence item, uint32_t min, uint32_t max, std::string_view base) {
    if (max < min) fail("grammar: repetition {", min, ",", max, "} has max < min");
    if (min > MAX_REPEAT || (max != UNBOUNDED && max > MAX_REPEAT)) {
      fail("grammar: repetition count over ", MAX_REPEAT, " in rule '", base, "'");
    }
    const Element one = item.size() == 1 ? item[0] : wrap(std::move(item), base);
    Sequence seq(min, one);
    if (max == UNBOUNDED) {
      const uint32_t star = fresh_rule(base);
      define(star, {{one, ref(star)}, {}});
      seq.push_back(ref(star));
    } else if (max > min) {  // nested optionals: opt_k ::= one opt_{k-1} | ""
      uint32_t previous = fresh_rule(base);
      define(previous, {{one}, {}});
      for (uint32_t k = 2; k <= max - min; ++k) {
        const uint32_t opt = fresh_rule(base);
        define(opt, {{one, ref(previous)}, {}});
        previous = opt;
      }
      seq.push_back(ref(previous));
    }
    return seq.size() == 1 ? seq[0] : wrap(std::move(seq), base);
  }

  // A rule whose one alternative is `seq`, as an element.
  Element wrap(Sequence seq, std::string_view base) {
    const uint32_t r = fresh_rule(base);
    define(r, {std::move(seq)});
    return ref(r);
  }

  Grammar build(uint32_t root) {
    // The checks below and the recognizer's closure follow rule references recursively: bounded.
    if (names_.size() > HLLM_GRAMMAR_MAX_RULES)
      fail("grammar: more than ", HLLM_GRAMMAR_MAX_RULES, " rules (", names_.size(), ")");
    for (uint32_t r = 0; r < names_.size(); ++r) {
      if (!defined_[r]) fail("grammar: rule '", names_[r], "' is used but never defined");
    }
    check_left_recursion();
    Grammar g;
    g.byte_sets_ = byte_sets_;
    g.root_ = root;
    for (uint32_t r = 0; r < names_.size(); ++r) {
      Rule rule{names_[r], {}};
      for (const Sequence& alt : definitions_[r]) {
        rule.alternatives.push_back(static_cast<uint32_t>(g.elements_.size()));
        g.elements_.insert(g.elements_.end(), alt.begin(), alt.end());
        g.elements_.push_back(Element{});
      }
      g.rules_.push_back(std::move(rule));
    }
    return g;
  }

 private:
  // A rule "calls" the rules it can reach before matching a byte (through nullable prefixes); a
  // cycle among those calls is left recursion.
  void check_left_recursion() const {
    const size_t n = names_.size();
    std::vector<bool> nullable(n, false);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        if (nullable[r]) continue;
        for (const Sequence& alt : definitions_[r]) {
          if (std::all_of(alt.begin(), alt.end(), [&](Element e) {
                return e.kind == Element::Kind::rule && nullable[e.index];
              })) {
            nullable[r] = changed = true;
            break;
          }
        }
      }
    }
    std::vector<std::vector<uint32_t>> calls(n);
    for (size_t r = 0; r < n; ++r) {
      for (const Sequence& alt : definitions_[r]) {
        for (const Element e : alt) {
          if (e.kind != Element::Kind::rule) break;
          calls[r].push_back(e.index);
          if (!nullable[e.index]) break;
        }
      }
    }
    std::vector<uint8_t> color(n, 0);  // 0 unvisited, 1 on the path, 2 done
    std::vector<uint32_t> path;
    const auto visit = [&](auto&& self, uint32_t r) -> void {
      color[r] = 1;
      path.push_back(r);
      for (const uint32_t callee : calls[r]) {
        if (color[callee] == 1) {
          std::string cycle;
          for (auto it = std::find(path.begin(), path.end(), callee); it != path.end(); ++it) {
            cycle += names_[*it] + " -> ";
          }
          fail("grammar: rule '", names_[callee], "' is left-recursive (", cycle, names_[callee],
               "): it can reach itself before matching any byte; use repetition (x*) instead");
        }
        if (color[callee] == 0) self(self, callee);
      }
      path.pop_back();
      color[r] = 2;
    };
    for (uint32_t r = 0; r < n; ++r) {
      if (color[r] == 0) visit(visit, r);
    }
  }

  std::vector<std::string> names_;
  std::vector<std::vector<Sequence>> definitions_;
  std::vector<bool> defined_;
  std::unordered_map<std::string, uint32_t> by_name_;
  std::vector<ByteSet> byte_sets_;
  std::map<std::vector<CodePointRange>, Element> classes_;
  uint32_t fresh_count_ = 0;
};

}  // namespace hllm::grammar
