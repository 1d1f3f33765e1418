// The stb_image decoders (Debian's libstb-dev), compiled once, for PNG and JPEG only: the other
// formats are not needed, and each decoder left out is code a hostile file cannot reach. Every
// allocation goes through image::detail::bounded_realloc, which refuses more than the caller allows
// for the image at hand (a deflate stream that expands past the image's size, say).
#include <cstddef>

namespace handgrad::image::detail {
void* bounded_realloc(void* pointer, size_t size);
void bounded_free(void* pointer);
}  // namespace handgrad::image::detail

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#define STBI_FAILURE_USERMSG
#define STBI_MALLOC(size) handgrad::image::detail::bounded_realloc(nullptr, size)
#define STBI_REALLOC(pointer, size) handgrad::image::detail::bounded_realloc(pointer, size)
#define STBI_FREE(pointer) handgrad::image::detail::bounded_free(pointer)

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb_image.h>
#pragma GCC diagnostic pop
