// Layer specs such as "conv8k5s1p2-maxpool3s2p1-fc120-sigmoid" (mirrors the layer-spec section of
// src/handgrad/models.py, with its grammar and the words of its errors).
#include "handgrad/models.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>

namespace handgrad {
namespace {

// Each token's form, as SPEC_TOKENS (the order of spec_grammar()).
const std::vector<std::pair<std::string, std::string>>& forms() {
    static const std::vector<std::pair<std::string, std::string>> table = {
        {"conv", "conv<C>[k<K>][s<S>][p<P>][d<D>][g<G>][nb]"},
        {"maxpool", "maxpool[<K>][s<S>][p<P>]"},
        {"avgpool", "avgpool[<K>][s<S>][p<P>]"},
        {"adaptiveavg", "adaptiveavg<N>"},
        {"fc", "fc<N>[nb]"},
        {"out", "out[nb]"},
        {"bn", "bn"},
        {"ln", "ln"},
        {"dropout", "dropout[<P>]"}};
    return table;
}
std::string form_of(const std::string& kind) {
    for (auto& [k, form] : forms())
        if (k == kind) return form;
    return kind;
}

// Token heads, longest first so that "maxpool3" is not read as "max" + ...
const std::vector<std::string> HEADS = {"adaptiveavg", "maxpool", "avgpool", "dropout", "conv",
                                        "pool",        "out",     "fc",      "bn",      "ln"};

// Python's repr of a str: in single quotes.
std::string quoted(const std::string& s) { return "'" + s + "'"; }

// A spec error: the message alone; parse_layer_spec adds which token, where.
struct SpecError {
    std::string message;
};

bool all_digits(const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}
// Digits as a number, capped above MAX_SIZE (so a long run of digits cannot overflow).
int64_t digits_value(const std::string& s) {
    int64_t v = 0;
    for (char c : s) v = std::min<int64_t>(v * 10 + (c - '0'), MAX_SIZE + 1);
    return v;
}

std::string leading(const std::string& text, bool (*accept)(unsigned char)) {
    size_t i = 0;
    while (i < text.size() && accept(static_cast<unsigned char>(text[i]))) ++i;
    return text.substr(0, i);
}

// The start of text that reads <digits> or, with pairs, <digits>x<digits>.
std::string leading_size(const std::string& text, bool pair) {
    const std::string first = leading(text, [](unsigned char c) { return std::isdigit(c) != 0; });
    if (!pair || first.empty() || first.size() >= text.size() || text[first.size()] != 'x') return first;
    const std::string second = leading(text.substr(first.size() + 1), [](unsigned char c) { return std::isdigit(c) != 0; });
    return second.empty() ? first : first + "x" + second;
}

int64_t spec_int(const std::string& text, const std::string& form, const std::string& example) {
    if (!all_digits(text) || digits_value(text) < 1 || digits_value(text) > MAX_SIZE)
        throw SpecError{text.empty() ? "expected " + form + " (e.g. " + example + "), the size is missing"
                                     : "expected " + form + " with a size from 1 to " + std::to_string(MAX_SIZE) +
                                           " (e.g. " + example + "), got " + quoted(text)};
    return digits_value(text);
}

// "5" -> (5, 5); "3x5" -> (3, 5); each from low to MAX_SIZE.
nn::Pair spec_pair(const std::string& text, const std::string& form, const std::string& example, int64_t low) {
    std::vector<std::string> parts{""};
    for (char c : text) c == 'x' ? parts.push_back("") : void(parts.back() += c);
    const bool ok = !text.empty() && parts.size() <= 2 && std::all_of(parts.begin(), parts.end(), [&](const std::string& p) {
        return all_digits(p) && digits_value(p) >= low && digits_value(p) <= MAX_SIZE;
    });
    if (!ok)
        throw SpecError{"expected " + form + " with a size from " + std::to_string(low) + " to " + std::to_string(MAX_SIZE) +
                        ", or " + form.substr(0, form.size() - 3) + "<H>x<W> (e.g. " + example + "), " +
                        (text.empty() ? "the value is missing" : "got " + quoted(text))};
    return {digits_value(parts.front()), digits_value(parts.back())};
}

// Python's float() of a dropout probability (the text must be a whole number).
std::optional<double> parse_float(const std::string& text) {
    if (text.empty() || text.find_first_of("xX") != std::string::npos) return std::nullopt;  // no hex floats
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    return *end ? std::nullopt : std::optional<double>(v);
}

// "k5s2p1nb" -> kernel (5, 5), stride (2, 2), padding (1, 1), no bias.
void spec_options(SpecToken& token, const std::string& rest, const std::string& before) {
    static const std::map<std::string, std::string> letters_of = {
        {"conv", "kspdg"}, {"maxpool", "sp"}, {"avgpool", "sp"}, {"adaptiveavg", ""},
        {"fc", ""},        {"out", ""},       {"bn", ""},        {"ln", ""}};
    struct Option {
        std::string form, example;
        int64_t low;
        std::optional<nn::Pair> SpecToken::* field;
    };
    static const std::map<char, Option> options = {{'k', {"k<K>", "k5 or k3x5", 1, &SpecToken::kernel}},
                                                   {'s', {"s<S>", "s2 or s2x1", 1, &SpecToken::stride}},
                                                   {'p', {"p<P>", "p0 or p2x1", 0, &SpecToken::padding}},
                                                   {'d', {"d<D>", "d2 or d2x1", 1, &SpecToken::dilation}},
                                                   {'g', {"g<G>", "g2", 1, nullptr}}};
    const std::string letters = letters_of.at(token.kind);
    const bool takes_nb = token.kind == "conv" || token.kind == "fc" || token.kind == "out";
    bool bias_given = false;
    for (size_t i = 0; i < rest.size();) {
        const bool nb = rest.compare(i, 2, "nb") == 0;
        const char key = rest[i];
        if ((nb && !takes_nb) || (!nb && (!std::islower(static_cast<unsigned char>(key)) || letters.find(key) == std::string::npos))) {
            std::string allowed;
            for (char c : letters) allowed += (allowed.empty() ? "" : ", ") + options.at(c).form;
            if (takes_nb) allowed += allowed.empty() ? "nb" : ", nb";
            throw SpecError{"unexpected " + quoted(rest.substr(i)) + " after " + quoted(before + rest.substr(0, i)) + "; " +
                            (allowed.empty() ? token.kind + " takes no options" : token.kind + " takes " + allowed) +
                            " (the form is " + form_of(token.kind) + ")"};
        }
        if (nb) {
            if (bias_given) throw SpecError{"nb is given twice"};
            token.bias = false, bias_given = true, i += 2;
            continue;
        }
        const Option& option = options.at(key);
        if (option.field ? bool(token.*option.field) : bool(token.groups))
            throw SpecError{std::string(1, key) + " is given twice"};
        const std::string value = leading_size(rest.substr(i + 1), true);
        if (option.field) token.*option.field = spec_pair(value, option.form, option.example, option.low);
        else token.groups = spec_int(value, option.form, option.example);  // g: one count, not a pair
        i += 1 + value.size();
    }
}

// An activation name, or leaky_relu<slope>: the token's activation fields set; false when t names none.
bool spec_activation(SpecToken& token, const std::string& t) {
    const auto names = activation_names();
    if (std::find(names.begin(), names.end(), t) != names.end()) {
        token.kind = "activation", token.activation = t;
        return true;
    }
    // ([a-z_]+)(\d*\.?\d+): a name and a number
    const std::string name = leading(t, [](unsigned char c) { return std::islower(c) || c == '_'; });
    const std::string number = t.substr(name.size());
    const size_t dot = number.find('.');
    const bool numeric = !number.empty() && number.back() != '.' && number.find('.', dot + 1) == std::string::npos &&
                         std::all_of(number.begin(), number.end(), [](unsigned char c) { return std::isdigit(c) || c == '.'; });
    if (name.empty() || !numeric || std::find(names.begin(), names.end(), name) == names.end()) return false;
    if (name != "leaky_relu")
        throw SpecError{name + " takes no parameter; only leaky_relu takes one, its slope (e.g. leaky_relu0.1)"};
    token.kind = "activation", token.activation = name, token.value = std::strtod(number.c_str(), nullptr);
    return true;
}

// difflib.SequenceMatcher(None, a, b).ratio(): 2 M / (|a| + |b|), M the characters of the matching
// blocks found by taking the longest common block, then recursing on either side of it.
size_t matching_characters(const std::string& a, size_t alo, size_t ahi, const std::string& b, size_t blo, size_t bhi) {
    size_t best_i = alo, best_j = blo, best = 0;
    for (size_t i = alo; i < ahi; ++i)
        for (size_t j = blo; j < bhi; ++j) {
            size_t k = 0;
            while (i + k < ahi && j + k < bhi && a[i + k] == b[j + k]) ++k;
            if (k > best) best = k, best_i = i, best_j = j;
        }
    if (!best) return 0;
    return best + matching_characters(a, alo, best_i, b, blo, best_j) +
           matching_characters(a, best_i + best, ahi, b, best_j + best, bhi);
}

// difflib.get_close_matches(word, candidates, n=1, cutoff=0.6): the best ratio, ties to the larger name.
std::optional<std::string> close_match(const std::string& word, const std::vector<std::string>& candidates) {
    std::optional<std::string> best;
    double best_ratio = 0;
    for (auto& c : candidates) {
        const double ratio = 2.0 * static_cast<double>(matching_characters(c, 0, c.size(), word, 0, word.size())) /
                             static_cast<double>(c.size() + word.size());
        if (ratio >= 0.6 && (!best || ratio > best_ratio || (ratio == best_ratio && c > *best))) best = c, best_ratio = ratio;
    }
    return best;
}

SpecToken parse_token(int position, const std::string& text) {
    std::string t = text;
    for (char& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    SpecToken token{.position = position, .text = text};
    if (t == "none") {
        token.kind = "none";
        return token;
    }
    if (spec_activation(token, t)) return token;
    const auto head = std::find_if(HEADS.begin(), HEADS.end(), [&](const std::string& h) { return t.rfind(h, 0) == 0; });
    if (head == HEADS.end()) {
        const std::string letters = leading(t, [](unsigned char c) { return std::islower(c) || c == '_'; });
        std::vector<std::string> candidates = HEADS;
        candidates.push_back("none");
        for (auto& a : activation_names()) candidates.push_back(a);
        const auto close = letters.empty() ? std::nullopt : close_match(letters, candidates);
        throw SpecError{"unknown token; expected " + spec_grammar() + (close ? "; did you mean " + quoted(*close) + "?" : "")};
    }
    token.kind = *head == "pool" ? "maxpool" : *head;
    const std::string rest = t.substr(head->size());
    if (token.kind == "dropout") {
        const auto p = rest.empty() ? std::optional<double>(0.5) : parse_float(rest);
        if (!p) throw SpecError{"expected dropout<P> with 0 <= P < 1, e.g. dropout0.2"};
        if (!(*p >= 0 && *p < 1)) throw SpecError{"dropout probability must be from 0 to below 1, got " + nn::py_repr(*p)};
        token.value = *p;
        return token;
    }
    const bool pool = token.kind == "maxpool" || token.kind == "avgpool";
    const std::string size_text = leading_size(rest, pool || token.kind == "adaptiveavg");
    if (token.kind == "conv" || token.kind == "fc") {
        const bool conv = token.kind == "conv";
        token.size = spec_int(size_text.empty() ? rest : size_text, token.kind + (conv ? "<C>" : "<N>"),
                              conv ? "conv16 or conv16k5" : "fc128");
    } else if (pool) {
        token.kernel = size_text.empty() ? nn::Pair{2, 2}
                                         : spec_pair(size_text, *head + "<K>", *head + "3 or " + *head + "2x1", 1);
    } else if (token.kind == "adaptiveavg") {
        token.output_size = spec_pair(size_text, "adaptiveavg<N>", "adaptiveavg1 or adaptiveavg4x3", 1);
    } else if (!size_text.empty()) {
        throw SpecError{token.kind + " takes no size" + (token.kind == "out" ? " (it has one output per class)" : "")};
    }
    spec_options(token, rest.substr(size_text.size()), text.substr(0, head->size() + size_text.size()));
    return token;
}

// The order rules that need no shapes: an activation replaces the ReLU of the conv or fc right
// before it (none removes it), or follows out; nothing else follows out.
void check_order(const SpecToken& token, const SpecToken* previous, bool after_out) {
    if (token.kind == "activation" || token.kind == "none") {
        const bool follows = previous && (previous->kind == "conv" || previous->kind == "fc" ||
                                          (previous->kind == "out" && token.kind == "activation"));
        if (!follows)
            throw SpecError{token.kind == "none" ? "none must follow a conv or fc directly (it removes their ReLU)"
                                                 : "an activation must follow conv, fc or out directly "
                                                   "(it replaces their ReLU, or is added after out)"};
    } else if (after_out) {
        throw SpecError{"out must be the last layer token (only an activation may follow it)"};
    }
}

// (H, W) after a conv or pool: (H + 2P - K) // S + 1, refusing a window larger than the padded maps.
std::pair<int64_t, int64_t> window(const Shape& shape, const Shape& input_shape, nn::Pair k, nn::Pair s, nn::Pair p) {
    const int64_t h = shape[1], w = shape[2];
    if (h + 2 * p[0] < k[0] || w + 2 * p[1] < k[1]) {
        const std::string padded = p[0] || p[1] ? " padded to " + std::to_string(h + 2 * p[0]) + "x" + std::to_string(w + 2 * p[1]) : "";
        throw SpecError{"it shrinks the " + std::to_string(h) + "x" + std::to_string(w) + " maps to nothing (input " +
                        std::to_string(input_shape[input_shape.size() - 2]) + "x" + std::to_string(input_shape.back()) +
                        "): its " + std::to_string(k[0]) + "x" + std::to_string(k[1]) +
                        " window is larger than the maps" + padded + "; use fewer pools, a smaller kernel or more padding"};
    }
    return {(h + 2 * p[0] - k[0]) / s[0] + 1, (w + 2 * p[1] - k[1]) / s[1] + 1};
}

void check_weights(int64_t count) {
    if (count > MAX_ELEMENTS)
        throw SpecError{"it makes a layer of " + std::to_string(count) + " weights, more than the limit " + std::to_string(MAX_ELEMENTS)};
}

// Append token's layers; the per-sample shape after them.
Shape add_layers(nn::Sequential& m, const SpecToken& token, const std::string& previous, Shape shape,
                 const Shape& input_shape, int64_t num_classes) {
    const std::string& kind = token.kind;
    if ((kind == "conv" || kind == "maxpool" || kind == "avgpool" || kind == "adaptiveavg") && shape.size() != 3)
        throw SpecError{input_shape.size() == 3 ? "a " + std::string(kind == "conv" ? "conv" : "pool") + " must come before any fc"
                                                : "a " + kind + " needs (C, H, W) maps, but the input is " +
                                                      fmt_shape(input_shape) + " per sample"};
    if (kind == "conv") {
        const nn::Pair k = token.kernel.value_or(nn::Pair{3, 3}), s = token.stride.value_or(nn::Pair{1, 1});
        const nn::Pair d = token.dilation.value_or(nn::Pair{1, 1});
        const int64_t groups = token.groups.value_or(1);
        const nn::Pair p = token.padding.value_or(nn::Pair{d[0] * (k[0] / 2), d[1] * (k[1] / 2)});
        if (shape[0] % groups || token.size % groups)
            throw SpecError{"g" + std::to_string(groups) + " must divide the " + std::to_string(shape[0]) +
                            " channels in and the " + std::to_string(token.size) + " out"};
        check_weights(token.size * shape[0] / groups * k[0] * k[1]);
        const nn::Pair spans{functional::dilated_size(k[0], d[0]), functional::dilated_size(k[1], d[1])};
        const auto [h, w] = window(shape, input_shape, spans, s, p);
        const int64_t unfolded = h * w * shape[0] * k[0] * k[1];
        if (unfolded > MAX_ELEMENTS)
            throw SpecError{"it unfolds " + std::to_string(unfolded) + " values per sample, more than the limit " +
                            std::to_string(MAX_ELEMENTS)};
        m.add<nn::Conv2d>(nn::Conv2dOptions{.in_channels = shape[0], .out_channels = token.size, .kernel_size = k,
                                            .stride = s, .padding = p, .bias = token.bias, .dilation = d,
                                            .groups = groups});
        m.add<nn::ReLU>();
        return {token.size, h, w};
    }
    if (kind == "maxpool" || kind == "avgpool") {
        const nn::Pair k = *token.kernel, p = token.padding.value_or(nn::Pair{0, 0}), s = token.stride.value_or(k);
        if (p[0] > k[0] / 2 || p[1] > k[1] / 2)
            throw SpecError{"padding " + std::to_string(p[0]) + "x" + std::to_string(p[1]) + " must be at most half of the " +
                            std::to_string(k[0]) + "x" + std::to_string(k[1]) + " window"};
        const auto [h, w] = window(shape, input_shape, k, s, p);
        const nn::Pool2dOptions options{.kernel_size = k, .stride = s, .padding = p};
        if (kind == "maxpool") m.add<nn::MaxPool2d>(options);
        else m.add<nn::AvgPool2d>(options);
        return {shape[0], h, w};
    }
    if (kind == "adaptiveavg") {
        m.add<nn::AdaptiveAvgPool2d>(nn::AdaptiveAvgPool2d::Size{(*token.output_size)[0], (*token.output_size)[1]});
        return {shape[0], (*token.output_size)[0], (*token.output_size)[1]};
    }
    if (kind == "fc" || kind == "out") {
        if (shape.size() != 1) {
            m.add<nn::Flatten>();
            shape = {Tensor::count(shape)};
        }
        const int64_t width = kind == "fc" ? token.size : num_classes;
        check_weights(width * shape[0]);
        m.add<nn::Linear>(nn::LinearOptions{.in_features = shape[0], .out_features = width, .bias = token.bias});
        if (kind == "fc") m.add<nn::ReLU>();
        return {width};
    }
    if (kind == "bn") {
        if (shape.size() == 3) m.add<nn::BatchNorm2d>(nn::BatchNormOptions{.num_features = shape[0]});
        else m.add<nn::BatchNorm1d>(nn::BatchNormOptions{.num_features = shape[0]});
    } else if (kind == "ln") {
        m.add<nn::LayerNorm>(nn::LayerNormOptions{.normalized_shape = shape});
    } else if (kind == "dropout") {
        m.add<nn::Dropout>(*token.value);
    } else if (kind == "none") {
        m.layers.pop_back();  // the ReLU of the conv or fc just before (the tokenizer checked the order)
    } else {
        auto made = make_activation(token.activation, token.value);
        if (previous == "out") m.append(std::move(made));
        else m.layers.back() = std::move(made);
    }
    return shape;
}

}  // namespace

std::string spec_grammar() {
    std::string grammar, acts;
    for (auto& [_, form] : forms()) grammar += (grammar.empty() ? "" : ", ") + form;
    for (auto& a : activation_names()) acts += (acts.empty() ? "" : ", ") + a;
    return grammar + ", none, or an activation (" + acts + ")";
}

std::vector<SpecToken> tokenize_layer_spec(const std::string& spec) {
    std::vector<std::string> texts{""};
    for (char c : spec) (c == '-' || c == ',') ? texts.push_back("") : void(texts.back() += c);
    std::vector<SpecToken> tokens;
    int position = 0;
    for (auto& raw : texts) {
        const size_t a = raw.find_first_not_of(" \t\n\r\f\v"), b = raw.find_last_not_of(" \t\n\r\f\v");
        if (a == std::string::npos) continue;
        const std::string text = raw.substr(a, b - a + 1);
        ++position;
        try {
            SpecToken token = parse_token(position, text);
            const bool after_out = std::any_of(tokens.begin(), tokens.end(), [](auto& t) { return t.kind == "out"; });
            check_order(token, tokens.empty() ? nullptr : &tokens.back(), after_out);
            tokens.push_back(token);
        } catch (const SpecError& e) {
            throw HandgradError("bad layer spec token " + quoted(text) + " (number " + std::to_string(position) + ") in " +
                                    quoted(spec),
                                e.message);
        }
    }
    if (tokens.empty())
        throw HandgradError("empty layer spec " + quoted(spec), "expected tokens such as conv16-pool-fc128");
    return tokens;
}

nn::Sequential parse_layer_spec(const std::string& spec, const Shape& input_shape, int64_t num_classes) {
    const auto tokens = tokenize_layer_spec(spec);
    nn::Sequential model;
    Shape shape = input_shape;
    for (size_t i = 0; i < tokens.size(); ++i) {
        const SpecToken& token = tokens[i];
        try {
            shape = add_layers(model, token, i ? tokens[i - 1].kind : "", shape, input_shape, num_classes);
            if (Tensor::count(shape) > MAX_ELEMENTS)
                throw SpecError{"it makes " + std::to_string(Tensor::count(shape)) + " values per sample " +
                                fmt_shape(shape) + ", more than the limit " + std::to_string(MAX_ELEMENTS)};
        } catch (const SpecError& e) {
            throw HandgradError("bad layer spec token " + quoted(token.text) + " (number " +
                                    std::to_string(token.position) + ") in " + quoted(spec),
                                e.message);
        }
    }
    if (std::none_of(tokens.begin(), tokens.end(), [](auto& t) { return t.kind == "out"; })) {
        try {
            add_layers(model, SpecToken{.text = "out", .kind = "out"}, "", shape, input_shape, num_classes);
        } catch (const SpecError& e) {
            throw HandgradError("layer spec " + quoted(spec), e.message);
        }
    }
    return model;
}

}  // namespace handgrad
