// The loaders on files from anywhere, for tests/test_cpp_robustness.py's fuzz test: one process
// reads many (damaged) files, so that hundreds of cases take seconds, also under the sanitizers.
//
//     fuzz_loaders KIND FILE...     KIND: checkpoint (load, with the reference check), idx (read_idx)
//                                   or image (predict's load_images, for a 1 x 28 x 28 input)
//
// Prints one JSON line per file: {"file", "outcome": "loaded" | "refused" | "failed", "message"}.
// "refused" is a HandgradError (the message is what the CLI would print after "error: "); "failed"
// is any other exception, which the test counts as a bug. The file about to be read is named on
// stderr first, so a crash or a hang points at its case.
#include "handgrad/idx.hpp"
#include "handgrad/image.hpp"
#include "handgrad/serialization.hpp"

#include <iostream>

using namespace handgrad;

int main(int argc, char** argv) {
    if (argc < 2) {
        std::cerr << "usage: fuzz_loaders checkpoint|idx|image FILE...\n";
        return 2;
    }
    const std::string kind = argv[1];
    for (int i = 2; i < argc; ++i) {
        const std::string path = argv[i];
        std::cerr << "reading " << path << std::endl;
        json line = {{"file", path}, {"outcome", "loaded"}, {"message", ""}};
        try {
            if (kind == "checkpoint") load(path);
            else if (kind == "idx") idx::read_idx(path);
            else if (kind == "image") image::load_images(path, {1, 28, 28});
            else throw std::invalid_argument("unknown kind " + kind);
        } catch (const HandgradError& e) {
            line["outcome"] = "refused";
            line["message"] = e.what();
        } catch (const std::exception& e) {
            line["outcome"] = "failed";
            line["message"] = std::string("std::exception: ") + e.what();
        }
        std::cout << line.dump(-1, ' ', true, json::error_handler_t::replace) << std::endl;
    }
    return 0;
}
