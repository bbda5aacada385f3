// Downstream smoke test: only lstash's public, installed headers.
#include <lstash/status.h>
#include <lstash/store.h>

#include <cstdio>
#include <memory>

int main() {
  std::unique_ptr<lstash::Store> store = lstash::NewMemoryStore();
  if (!store) {
    std::fprintf(stderr, "consumer: NewMemoryStore() returned null\n");
    return 1;
  }
  lstash::Result<lstash::Epoch> epoch = store->BeginIncarnation(0);
  if (!epoch.ok()) {
    std::fprintf(stderr, "consumer: BeginIncarnation(0) failed: %s\n", epoch.status().ToString().c_str());
    return 1;
  }
  if (*epoch != 1) {
    std::fprintf(stderr, "consumer: BeginIncarnation(0) returned epoch %llu, want 1\n",
                 static_cast<unsigned long long>(*epoch));
    return 1;
  }
  std::printf("consumer ok\n");
  return 0;
}
