// The smallest program that embeds Ember: it is built only against an installed Ember
// (`make install PREFIX=...`, then `pkg-config --cflags --libs ember`), never against the source
// tree, so it proves the installed headers, libember.a and ember.pc are complete.
//
//   c++ main.cpp $(pkg-config --cflags --libs ember) -o embed && ./embed DIR
//
// It builds a tiny GPT, saves it to DIR in Hugging Face's layout, loads it back and checks that
// both give the same logits.
#include <cstdio>
#include <string>

#include "models/gpt.h"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: embed DIR   (an existing folder to save the model in)\n");
        return 2;
    }
    using namespace ember;
    try {
        models::GPT model(models::GPTConfig::gpt2(256, 16, 32, 2, 4), 7);
        model.eval();
        Tensor ids = from_vector(std::vector<int64_t>{72, 101, 108, 108, 111}, {1, 5});
        NoGradGuard no_grad;
        Tensor before = model.forward_ids(ids);
        model.save_pretrained(argv[1]);
        auto loaded = models::GPT::from_pretrained(argv[1]);
        loaded->eval();
        double diff = max(abs(loaded->forward_ids(ids) - before)).item<double>();
        std::printf("embed: %lld parameters, logits %s, reloaded max |diff| %g\n",
                    (long long)model.num_parameters(), make_message(before.shape()).c_str(), diff);
        return diff == 0 ? 0 : 1;
    } catch (const Error& e) {
        std::fprintf(stderr, "embed: %s\n", e.what());
        return 1;
    }
}
