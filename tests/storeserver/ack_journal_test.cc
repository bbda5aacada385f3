// The acknowledgement journal and the durability check built on it: a store
// server journals what it acknowledged; the check finds it all again, and
// reports writes that are gone or changed (its negative controls).
#include "storeserver/ack_journal.h"

#include <gtest/gtest.h>
#include <lstash/remote_store.h>

#include <fstream>

#include "scratch_dir.h"

namespace lstash {
namespace {

using testing_support::ScratchDir;

void AppendLine(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  out << line;
}

class AckJournalTest : public ::testing::Test {
 protected:
  // A server with a journal takes three appends and a checkpoint from a
  // remote client, then stops.
  void SetUp() override {
    StoreServerOptions options;
    options.listen = "tcp://127.0.0.1:0";
    options.data_dir = dir_.path() + "/data";
    options.ack_journal = journal_;
    auto server = StoreServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    RemoteStoreOptions ro;
    ro.shards = {(*server)->endpoint()};
    auto client = OpenRemoteStore(ro);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    Store& store = **client;
    for (WorkerId w : {0u, 1u}) {
      auto epoch = store.BeginIncarnation(w);
      ASSERT_TRUE(epoch.ok());
      ASSERT_TRUE(store.SetEpochStart(w, *epoch, 1).ok());
      for (LogIndex i = 1; i <= 6; i += 2) {
        std::vector<LogRecord> records = {{i, "w" + std::to_string(w) + " entry " + std::to_string(i)},
                                          {i + 1, "w" + std::to_string(w) + " entry " + std::to_string(i + 1)}};
        ASSERT_TRUE(store.Append(w, *epoch, records, {}).ok());
      }
    }
    ASSERT_TRUE(store.PutCheckpoint(1, 1, 4, "checkpoint").ok());
  }

  store_journal::DurabilityReport Check() {
    auto store = OpenRocksDbStore(dir_.path() + "/data");
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    auto report = store_journal::CheckDurability(journal_, store->get());
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    return report.ok() ? *report : store_journal::DurabilityReport{};
  }

  ScratchDir dir_{"ack_journal_test"};
  std::string journal_ = dir_.path() + "/acks";
};

TEST_F(AckJournalTest, EverythingAcknowledgedIsFoundAgain) {
  store_journal::DurabilityReport r = Check();
  EXPECT_EQ(r.entries_checked, 12u);
  EXPECT_EQ(r.checkpoints_checked, 1u);
  EXPECT_TRUE(r.violations.empty()) << r.violations.front();
}

TEST_F(AckJournalTest, AnAcknowledgedEntryThatIsGoneIsReported) {
  AppendLine(journal_, "a 0 1 7 1234\n");  // as if the store had acknowledged entry 7, then lost it
  store_journal::DurabilityReport r = Check();
  ASSERT_EQ(r.violations.size(), 1u);
  EXPECT_NE(r.violations[0].find("worker 0's log entry 7 (epoch 1) was acknowledged but is gone"), std::string::npos)
      << r.violations[0];
}

TEST_F(AckJournalTest, ChangedBytesAndALostCheckpointAreReported) {
  AppendLine(journal_, "a 0 1 3 1\nc 0 1 2\n");  // entry 3 with other bytes; a checkpoint worker 0 never had
  store_journal::DurabilityReport r = Check();
  ASSERT_EQ(r.violations.size(), 2u);
  EXPECT_NE(r.violations[0].find("other bytes"), std::string::npos) << r.violations[0];
  EXPECT_NE(r.violations[1].find("checkpoint at 2"), std::string::npos) << r.violations[1];
}

TEST_F(AckJournalTest, AnUnfinishedLastLineWasNeverAcknowledged) {
  AppendLine(journal_, "a 0 1 9 12");  // the server died mid-line: no answer was sent
  EXPECT_TRUE(Check().violations.empty());
}

TEST_F(AckJournalTest, AFileThatIsNotAJournalIsRefused) {
  std::ofstream(journal_, std::ios::trunc) << "lstash-acks 2\na 0 1 1 1\n";
  auto store = OpenRocksDbStore(dir_.path() + "/data");
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(store_journal::CheckDurability(journal_, store->get()).status().code(), Code::kCorruption);
  std::ofstream(journal_, std::ios::trunc) << "lstash-acks 1\nx 0 1 1\n";
  EXPECT_EQ(store_journal::CheckDurability(journal_, store->get()).status().code(), Code::kCorruption);
}

}  // namespace
}  // namespace lstash
