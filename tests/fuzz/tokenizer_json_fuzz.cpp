// libFuzzer harness: the text of a tokenizer.json, read by hllm::tokenizer_from_json (the
// hand-written JsonScanner for the big "model" section, nlohmann for the small ones). A bad file
// must be an hllm::Error. An accepted tokenizer is then used: a few fixed texts are encoded (with
// and without special-token matching) and decoded back, and every id below the vocabulary size is
// decoded, so that a tokenizer that loads but is inconsistent (dangling ids, merges to unknown
// tokens, added tokens overlapping the vocab) shows up as a crash or a failed round trip here.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"
#include "tokenizer_checks.hpp"

using hllm::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  hllm::fuzz::expect_only_hllm_errors("tokenizer_from_json", [&] {
    const hllm::Tokenizer tok = hllm::tokenizer_from_json(text, "tokenizer.json");
    check(tok.vocab_size() <= (size_t{1} << 24) + 1, "vocabulary larger than the id limit");
    for (const std::string_view sample :
         {std::string_view("Hello, the world is here!  \n\n  x"), std::string_view("héllo wörld"),
          std::string_view("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
                           "你好 123456 it's<|eot_id|>")}) {
      for (const bool special : {false, true}) {
        const std::vector<hllm::TokenId> ids = tok.encode(sample, special);
        for (const hllm::TokenId id : ids)
          check(id >= 0 && static_cast<size_t>(id) < tok.vocab_size(), "encode gave a bad id");
        const std::string back = tok.decode(ids);
        // Round trip, unless an id is also an added token's: a file may give a vocab token's id
        // to an added token, and decode (like HF's) then prefers the added token.
        const bool added_id = std::any_of(ids.begin(), ids.end(), [&](hllm::TokenId id) {
          return std::any_of(tok.added_tokens().begin(), tok.added_tokens().end(),
                             [&](const hllm::AddedToken& t) { return t.id == id; });
        });
        if (!special && !added_id) check(back == sample, "decode(encode(text)) != text", back);
        hllm::fuzz::check_streamed_decode(tok, ids, back);
      }
    }
    hllm::fuzz::decode_every_id(tok);
  });
  return 0;
}
