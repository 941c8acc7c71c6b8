// tests/device_test.cc — ParseDevice, DeviceMap and ParseDeviceMap.
#include "loader/device.h"

#include <gtest/gtest.h>

namespace shardload {
namespace {

const Device kCpu{Device::Kind::kCpu, 0};
Device Cuda(int i) { return Device{Device::Kind::kCuda, i}; }

TEST(DeviceTest, ParsesPyTorchSpellings) {
  EXPECT_EQ(*ParseDevice("cpu"), kCpu);
  EXPECT_EQ(*ParseDevice("cuda"), Cuda(0));
  EXPECT_EQ(*ParseDevice("cuda:0"), Cuda(0));
  EXPECT_EQ(*ParseDevice("cuda:7"), Cuda(7));
  EXPECT_EQ(*ParseDevice("cuda:2147483647"), Cuda(2147483647));
  EXPECT_EQ(ParseDevice("cuda:12")->ToString(), "cuda:12");
  EXPECT_EQ(ParseDevice("cuda")->ToString(), "cuda:0");
  EXPECT_EQ(kCpu.ToString(), "cpu");
  // torch's "cpu:N" is the one host memory.
  EXPECT_EQ(*ParseDevice("cpu:0"), kCpu);
  EXPECT_EQ(*ParseDevice("cpu:3"), kCpu);
  EXPECT_EQ((Device{Device::Kind::kCpu, 3}).Normalized(), kCpu);
  EXPECT_EQ(Cuda(3).Normalized(), Cuda(3));
}

TEST(DeviceTest, RejectsEverythingElseWithExactMessage) {
  for (const char* bad : {"gpu", "", "CPU", "cuda:", "cuda:-1", "cuda:+1", "cuda:01",
                          "cuda:1x", "cuda: 1", "cuda:2147483648", "cuda:99999999999999999999",
                          "cpu:", "cpu:01", "cpu:-1", "cpu:x", "mps", "cuda:1:2", " cpu"}) {
    Result<Device> d = ParseDevice(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(d.status().message(),
              std::string("invalid device '") + bad + "': expected cpu, cuda or cuda:N");
  }
}

TEST(DeviceTest, DevicesOrderCpuFirstThenByIndex) {
  EXPECT_LT(kCpu, Cuda(0));
  EXPECT_LT(Cuda(0), Cuda(1));
}

TEST(DeviceMapTest, DefaultIsCpuAndAppliesWhenNoRuleMatches) {
  DeviceMap map;
  EXPECT_EQ(map.Resolve("anything"), kCpu);
  map.set_default(Cuda(3));
  EXPECT_EQ(map.Resolve("anything"), Cuda(3));
  EXPECT_EQ(map.Devices(), std::vector<Device>{Cuda(3)});
}

TEST(DeviceMapTest, GlobMatchesWholeNameFirstRuleWins) {
  DeviceMap map(Cuda(0));
  ASSERT_TRUE(map.AddRule("lm_head.*", kCpu).ok());
  ASSERT_TRUE(map.AddRule("model.layers.1?.*", Cuda(1)).ok());
  ASSERT_TRUE(map.AddRule("*.layers.1*", Cuda(2)).ok());
  EXPECT_EQ(map.Resolve("lm_head.weight"), kCpu);
  EXPECT_EQ(map.Resolve("x.lm_head.weight"), Cuda(0));  // whole name, not a substring
  EXPECT_EQ(map.Resolve("lm_head"), Cuda(0));           // the literal '.' must be there
  EXPECT_EQ(map.Resolve("model.layers.12.mlp.w"), Cuda(1));
  EXPECT_EQ(map.Resolve("model.layers.1.mlp.w"), Cuda(2));  // '?' needs one character
  EXPECT_EQ(map.Resolve("model.layers.2.mlp.w"), Cuda(0));
  EXPECT_EQ(map.Devices(), (std::vector<Device>{kCpu, Cuda(0), Cuda(1), Cuda(2)}));
}

TEST(DeviceMapTest, GlobEdgeCases) {
  DeviceMap map(kCpu);
  ASSERT_TRUE(map.AddRule("a*b*c", Cuda(1)).ok());
  ASSERT_TRUE(map.AddRule("**", Cuda(2)).ok());
  EXPECT_EQ(map.Resolve("abc"), Cuda(1));
  EXPECT_EQ(map.Resolve("aXbYbZc"), Cuda(1));
  EXPECT_EQ(map.Resolve("abcX"), Cuda(2));  // falls to "**", which matches anything
  EXPECT_EQ(map.Resolve(""), Cuda(2));
  // Characters that are special in regexes are literal in globs.
  DeviceMap lit(kCpu);
  ASSERT_TRUE(lit.AddRule("w.(0)+{1}", Cuda(4)).ok());
  EXPECT_EQ(lit.Resolve("w.(0)+{1}"), Cuda(4));
  EXPECT_EQ(lit.Resolve("wx(0)+{1}"), kCpu);
  // Names with NUL bytes are compared by length, not as C strings.
  DeviceMap nul(kCpu);
  ASSERT_TRUE(nul.AddRule(std::string("a\0b", 3), Cuda(5)).ok());
  EXPECT_EQ(nul.Resolve(std::string("a\0b", 3)), Cuda(5));
  EXPECT_EQ(nul.Resolve("a"), kCpu);
}

TEST(DeviceMapTest, RegexRulesMatchTheWholeName) {
  DeviceMap map(kCpu);
  ASSERT_TRUE(map.AddRule("re:model\\.layers\\.([0-9]|1[0-5])\\..*", Cuda(0)).ok());
  ASSERT_TRUE(map.AddRule("re:layers", Cuda(1)).ok());
  EXPECT_EQ(map.Resolve("model.layers.15.w"), Cuda(0));
  EXPECT_EQ(map.Resolve("model.layers.16.w"), kCpu);  // "re:layers" is not a search
  EXPECT_EQ(map.Resolve("layers"), Cuda(1));
}

TEST(DeviceMapTest, RegexRulesSkipNamesLongerThan1024Bytes) {
  DeviceMap map(kCpu);
  ASSERT_TRUE(map.AddRule("re:(a|b)*", Cuda(1)).ok());
  ASSERT_TRUE(map.AddRule("a*", Cuda(2)).ok());
  EXPECT_EQ(map.Resolve(std::string(1024, 'a')), Cuda(1));
  // 50,000 bytes would overflow the stack inside std::regex; the glob still applies.
  EXPECT_EQ(map.Resolve(std::string(50000, 'a')), Cuda(2));
}

// Typos a glob would take silently, and regexes std::regex could spend exponential time
// on, are refused when the rule is added.
TEST(DeviceMapTest, TyposAndExponentialRegexesAreRefused) {
  DeviceMap map;
  EXPECT_EQ(map.AddRule("lm_head.weight=", Cuda(0)),
            InvalidArgumentError("invalid device-map pattern 'lm_head.weight=': a glob pattern "
                                 "cannot hold '=' (a typo such as 'w==cpu'?); use re: for such "
                                 "names"));
  EXPECT_EQ(map.AddRule("layers.[12].w", Cuda(0)),
            InvalidArgumentError("invalid device-map pattern 'layers.[12].w': globs match '*' "
                                 "and '?' only; write a character class as re:"));
  EXPECT_EQ(map.AddRule("re:(.*\\.)*weight", Cuda(0)),
            InvalidArgumentError("invalid device-map pattern 're:(.*\\.)*weight': nested "
                                 "quantifiers can take exponential time; write it without a "
                                 "quantified group that holds '*' or '+'"));
  Result<DeviceMap> typo = ParseDeviceMap("lm_head.weight==cpu,cpu");
  EXPECT_EQ(typo.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(map.AddRule("re:layers\\.[12]\\..*", Cuda(0)).ok());
}

TEST(DeviceMapTest, NestedQuantifierDetection) {
  for (std::string_view bad : {"(a+)+", "(a*)*", "(.*\\.)*w", "((a)+)*", "(a+){2,}",
                               "(?:x*y)+z", "(a|b+)*"}) {
    EXPECT_TRUE(RegexHasNestedQuantifiers(bad)) << bad;
  }
  for (std::string_view ok : {"a+b*", "(ab)+", "(a+)?", "(a+){2}", "(a+){1,3}", "[(+]*",
                              "\\(a+\\)+", "layers\\.[0-9]+\\..*", "(a)(b+)", "^model\\.(.*)$"}) {
    EXPECT_FALSE(RegexHasNestedQuantifiers(ok)) << ok;
  }
}

TEST(DeviceMapTest, MalformedRegexIsAnError) {
  DeviceMap map;
  Status s = map.AddRule("re:(", Cuda(0));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message().rfind("invalid device-map pattern 're:(': ", 0), 0u) << s.message();
  EXPECT_GT(s.message().size(), std::string("invalid device-map pattern 're:(': ").size());
  EXPECT_EQ(map.Resolve("("), kCpu);  // the failed rule was not added
}

TEST(ParseDeviceMapTest, RulesAndDefault) {
  Result<DeviceMap> m = ParseDeviceMap("lm_head.*=cpu, *.experts.*=cuda:1 ,cuda:0");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->default_device(), Cuda(0));
  EXPECT_EQ(m->Resolve("lm_head.weight"), kCpu);
  EXPECT_EQ(m->Resolve("model.layers.0.experts.3.w1"), Cuda(1));
  EXPECT_EQ(m->Resolve("model.embed_tokens.weight"), Cuda(0));
}

TEST(ParseDeviceMapTest, DefaultMayComeFirstAndRegexMayHoldEquals) {
  Result<DeviceMap> m = ParseDeviceMap("cuda:2,re:a(?=b).*=cpu");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->Resolve("ab"), kCpu);
  EXPECT_EQ(m->Resolve("ac"), Cuda(2));
  Result<DeviceMap> only_default = ParseDeviceMap("cuda");
  ASSERT_TRUE(only_default.ok());
  EXPECT_EQ(only_default->Resolve("x"), Cuda(0));
  Result<DeviceMap> only_rule = ParseDeviceMap("x=cuda:1");
  ASSERT_TRUE(only_rule.ok());
  EXPECT_EQ(only_rule->Resolve("y"), kCpu);  // default stays cpu
}

TEST(ParseDeviceMapTest, RegexMayHoldCommas) {
  Result<DeviceMap> m = ParseDeviceMap("re:layers\\.[0-9]{1,2}\\..*=cuda:1,re:(a,b|c)=cpu:0,cuda:0");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->Resolve("layers.12.w"), Cuda(1));
  EXPECT_EQ(m->Resolve("layers.123.w"), Cuda(0));
  EXPECT_EQ(m->Resolve("a,b"), kCpu);
  EXPECT_EQ(m->Resolve("c"), kCpu);
  EXPECT_EQ(m->Resolve("a"), Cuda(0));
  // A cpu:N rule or default is stored as cpu.
  Result<DeviceMap> cpu1 = ParseDeviceMap("x=cpu:1,cpu:2");
  ASSERT_TRUE(cpu1.ok());
  EXPECT_EQ(cpu1->Resolve("x"), kCpu);
  EXPECT_EQ(cpu1->default_device(), kCpu);
  EXPECT_EQ(cpu1->Devices(), std::vector<Device>{kCpu});
  // A bracket-free comma ends the entry, so typos stay errors (they used to be joined
  // into one regex rule, silently sending every tensor to the default).
  for (const char* typo : {"re:attn.*=cuda:o,re:mlp.*=cuda:1", "re:attn.*=gpu,mlp.*=cpu",
                           "re:x=cuda:01,y=cpu"}) {
    Result<DeviceMap> bad = ParseDeviceMap(typo);
    EXPECT_FALSE(bad.ok()) << typo;
    EXPECT_EQ(bad.status().message().rfind("invalid device-map entry 're:", 0), 0u)
        << bad.status().message();
  }
  Result<DeviceMap> bare = ParseDeviceMap("re:a,b=cpu");
  ASSERT_FALSE(bare.ok());
  EXPECT_EQ(bare.status().message(),
            "invalid device-map entry 're:a': invalid device 're:a': expected cpu, cuda or "
            "cuda:N");
  // An escaped comma belongs to the regex.
  Result<DeviceMap> comma = ParseDeviceMap("re:a\\,b=cuda:1,cpu");
  ASSERT_TRUE(comma.ok()) << comma.status().ToString();
  EXPECT_EQ(comma->Resolve("a,b"), Cuda(1));
  EXPECT_EQ(comma->Resolve("a"), kCpu);
  // Escaped brackets and brackets inside a class open nothing.
  Result<DeviceMap> escaped = ParseDeviceMap("re:a\\{x=cuda:1,re:[{]y=cuda:0,cpu");
  ASSERT_TRUE(escaped.ok()) << escaped.status().ToString();
  EXPECT_EQ(escaped->Resolve("a{x"), Cuda(1));
  EXPECT_EQ(escaped->Resolve("{y"), Cuda(0));
  // A regex whose bracket never closes is reported whole; after an '=' the device is
  // what the open bracket left. Either way the hint says why.
  const std::string hint =
      " (a re: pattern's '[', '{' or '(' left open took the comma into this entry)";
  for (const auto& [text, device] : {std::pair<std::string, std::string>{"re:a{1,2,cpu", "re:a{1,2,cpu"},
                                     {"re:[=cpu,cpu", "cpu,cpu"}}) {
    Result<DeviceMap> open = ParseDeviceMap(text);
    ASSERT_FALSE(open.ok()) << text;
    EXPECT_EQ(open.status().message(), "invalid device-map entry '" + text +
                                           "': invalid device '" + device +
                                           "': expected cpu, cuda or cuda:N" + hint);
  }
}

TEST(DeviceMapTest, UnusedRulesNamesRulesThatPlaceNothing) {
  Result<DeviceMap> m =
      ParseDeviceMap("lm_head.*=cpu,typo.*=cuda:7,re:layers\\.[0-9]+\\..*=cuda:0,layers.1.*=cuda:1,cpu");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  std::vector<std::string> names = {"lm_head.weight", "layers.0.w", "layers.1.w", "norm"};
  // typo.* matches nothing; layers.1.* matches, but the regex before it takes the name.
  EXPECT_EQ(m->UnusedRules(names),
            (std::vector<std::string>{"typo.*=cuda:7", "layers.1.*=cuda:1"}));
  EXPECT_EQ(m->UnusedRules({}).size(), 4u);
  EXPECT_TRUE(DeviceMap(Device{}).UnusedRules(names).empty());
}

TEST(ParseDeviceMapTest, ErrorsNameTheEntry) {
  struct Case {
    const char* text;
    const char* message;
  } cases[] = {
      {"", "empty device map"},
      {"  ", "empty device map"},
      {"a=cpu,,b=cpu", "invalid device-map entry '': empty entry"},
      {"a=cpu,", "invalid device-map entry '': empty entry"},
      {"lm_head.*=gpu",
       "invalid device-map entry 'lm_head.*=gpu': invalid device 'gpu': expected cpu, cuda or "
       "cuda:N"},
      {"=cpu", "invalid device-map entry '=cpu': empty pattern"},
      {"tpu", "invalid device-map entry 'tpu': invalid device 'tpu': expected cpu, cuda or cuda:N"},
      {"cpu,cuda:1", "invalid device-map entry 'cuda:1': the default device is already set"},
  };
  for (const Case& c : cases) {
    Result<DeviceMap> m = ParseDeviceMap(c.text);
    ASSERT_FALSE(m.ok()) << c.text;
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << c.text;
    EXPECT_EQ(m.status().message(), c.message) << c.text;
  }
  Result<DeviceMap> bad_re = ParseDeviceMap("re:[=cuda");
  ASSERT_FALSE(bad_re.ok());
  EXPECT_EQ(bad_re.status().message().rfind(
                "invalid device-map entry 're:[=cuda': invalid device-map pattern 're:[': ", 0),
            0u)
      << bad_re.status().message();
}

}  // namespace
}  // namespace shardload
