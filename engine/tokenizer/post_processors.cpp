// Post-processors: put the template's special tokens (BOS, EOS, [CLS]...)
// around the ids of the text. Only single sequences are encoded here, so
// only the "single" template matters; type ids and offsets are not kept.
#include <nlohmann/json.hpp>

#include "engine/tokenizer/stages.h"

namespace ssalab::tokenizer {

using json = nlohmann::json;

namespace {

// before + ids + after, when add_special_tokens.
class Around final : public PostProcessor {
 public:
  Around(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    ids.insert(ids.begin(), before_.begin(), before_.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
  }
  void template_ids(std::vector<int32_t>& before, std::vector<int32_t>& after) const override {
    before = before_;
    after = after_;
  }

 private:
  std::vector<int32_t> before_, after_;
};

// ByteLevel only trims offsets, which we do not keep.
class NoOp final : public PostProcessor {
 public:
  void process(std::vector<int32_t>&, bool) const override {}
};

class Sequence final : public PostProcessor {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PostProcessor>> stages) : stages_(std::move(stages)) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    for (const auto& s : stages_) s->process(ids, add_special_tokens);
  }
  void template_ids(std::vector<int32_t>& before, std::vector<int32_t>& after) const override {
    for (const auto& s : stages_) s->template_ids(before, after);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> stages_;
};

// ["[CLS]", 101] as BertProcessing / RobertaProcessing write them.
int32_t token_pair_id(const json& j, const char* key, const JsonPlace& at) {
  const json& v = field(j, key, at);
  if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer()) at.at(key).fail("expected [\"token\", id]");
  return v[1].get<int32_t>();
}

// TemplateProcessing's "single": pieces before and after "$A".
std::unique_ptr<PostProcessor> make_template(const json& j, const JsonPlace& at) {
  const json& single = field(j, "single", at);
  const JsonPlace sat = at.at("single");
  if (!single.is_array()) sat.fail("expected a list of template pieces");
  const json* specials = j.contains("special_tokens") ? &j["special_tokens"] : nullptr;
  std::vector<int32_t> before, after;
  bool seen_a = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const json& p = single[i];
    std::string special;
    if (p.is_object() && p.contains("Sequence")) {
      const json& seq = p["Sequence"];
      if (seq.is_object() && seq.value("id", std::string("A")) != "A")
        sat.at(i).fail("the single-sequence template refers to sequence B");
      if (seen_a) sat.at(i).fail("the template holds sequence A twice");
      seen_a = true;
      continue;
    }
    if (p.is_object() && p.contains("SpecialToken") && p["SpecialToken"].is_object() &&
        p["SpecialToken"].contains("id") && p["SpecialToken"]["id"].is_string()) {
      special = p["SpecialToken"]["id"].get<std::string>();
    } else if (p.is_string()) {  // "$A", "$A:0", "<s>", "<s>:1"
      std::string s = p.get<std::string>();
      const size_t colon = s.rfind(':');
      if (colon != std::string::npos && colon + 1 < s.size() &&
          s.find_first_not_of("0123456789", colon + 1) == std::string::npos)
        s.resize(colon);
      if (s == "$" || s == "$A" || s == "$0") {
        seen_a = true;
        continue;
      }
      if (!s.empty() && s[0] == '$') sat.at(i).fail("the single-sequence template refers to " + s);
      special = s;
    } else {
      sat.at(i).fail("expected {\"SpecialToken\": ...}, {\"Sequence\": ...} or a string");
    }
    if (!specials || !specials->contains(special))
      sat.at(i).fail("special token \"" + special + "\" is not in special_tokens");
    const json& entry = (*specials)[special];
    const JsonPlace eat = at.at("special_tokens").at(special);
    const json& ids = field(entry, "ids", eat);
    if (!ids.is_array()) eat.at("ids").fail("expected a list of ids");
    for (const json& id : ids) {
      if (!id.is_number_integer()) eat.at("ids").fail("expected integer ids");
      (seen_a ? after : before).push_back(id.get<int32_t>());
    }
  }
  if (!seen_a) sat.fail("the template has no $A");
  return std::make_unique<Around>(std::move(before), std::move(after));
}

}  // namespace

std::unique_ptr<PostProcessor> make_bos_eos_processor(std::vector<int32_t> before, std::vector<int32_t> after) {
  return std::make_unique<Around>(std::move(before), std::move(after));
}

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const JsonPlace& at) {
  const std::string type = type_of(j, at);
  if (type == "TemplateProcessing") return make_template(j, at);
  if (type == "ByteLevel") return std::make_unique<NoOp>();
  if (type == "BertProcessing" || type == "RobertaProcessing")
    return std::make_unique<Around>(std::vector<int32_t>{token_pair_id(j, "cls", at)},
                                    std::vector<int32_t>{token_pair_id(j, "sep", at)});
  if (type == "Sequence") {
    const json& list = field(j, "processors", at);
    if (!list.is_array()) at.at("processors").fail("expected a list");
    std::vector<std::unique_ptr<PostProcessor>> stages;
    for (size_t i = 0; i < list.size(); ++i)
      stages.push_back(make_post_processor(list[i], at.at("processors").at(i)));
    return std::make_unique<Sequence>(std::move(stages));
  }
  unknown_type("post-processor", type,
               {"TemplateProcessing", "ByteLevel", "BertProcessing", "RobertaProcessing", "Sequence"}, at);
}

}  // namespace ssalab::tokenizer
