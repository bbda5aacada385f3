// LSTASH_EXPORT marks the public API: lstash is built with hidden symbol
// visibility, and only what carries this mark is exported from the shared
// library. (The C++11 attribute form composes with [[nodiscard]].)
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define LSTASH_EXPORT [[gnu::visibility("default")]]
#else
#define LSTASH_EXPORT
#endif
