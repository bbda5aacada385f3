// The checkpoint-mode baseline (lstash-bench's "checkpoint"): what a
// Flink-style engine does, in the same runtime as lstash so that the
// comparison is fair. Nothing is logged; FIFO channels carry tasks and
// Chandy-Lamport markers; the coordinator starts a global snapshot every so
// often, and when any worker fails every worker rolls back to the last
// complete one (a new generation: frames of older generations are dropped).
//
// A worker's part of snapshot k is its app state when the snapshot reached
// it plus the channel state: the tasks it ran, after that, from each sender
// whose marker had not yet arrived. Rolling back restores the app state and
// queues those tasks again, ahead of anything new.
#pragma once

#include <lstash/worker.h>

#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace lstash::runtime {

class SnapshotWorker final : public Worker {
 public:
  // `snapshot_app` returns the app's state; called between tasks, when a
  // snapshot reaches this worker.
  SnapshotWorker(WorkerId id, std::uint32_t workers, Epoch epoch, std::function<std::string()> snapshot_app);

  // Starts snapshot k here (a trigger from the coordinator), unless a marker
  // already did. Call between tasks.
  void StartSnapshot(std::uint64_t k);
  // Snapshots this worker completed since the last call: (k, record).
  std::vector<std::pair<std::uint64_t, std::string>> TakeCompletedSnapshots();
  // Rolls back to generation `generation`: drops everything queued, then
  // either queues the start task (no snapshot yet) or returns the app state
  // of `record` (a record from TakeCompletedSnapshots) and queues its
  // channel state. kCorruption for a bad record.
  Result<std::optional<std::string>> RollBack(std::uint64_t generation, const std::string* record);
  std::uint64_t generation() const { return generation_; }
  static Result<std::uint64_t> RecordSnapshotId(const std::string& record);

  Result<TaskId> Submit(WorkerId dest, std::string_view payload) override;
  Result<Delivery> Receive(std::string_view frame) override { return ReceiveFrom(id_, frame); }
  Result<Delivery> ReceiveFrom(WorkerId authenticated_sender, std::string_view frame) override;
  Result<std::optional<Task>> NextTask() override;
  Result<std::uint64_t> Random() override;
  Result<std::int64_t> Now() override;
  Result<std::string> Choose(const std::function<std::string()>& produce) override { return produce(); }
  std::vector<Frame> TakeFrames() override { return std::move(frames_); }
  void Tick() override {}
  Status Checkpoint(EngineSnapshot) override { return Status::OK(); }  // global snapshots instead
  std::optional<std::uint64_t> restored_snapshot_bytes() const override { return std::nullopt; }  // see RollBack
  Status ReadRestoredSnapshot(const std::function<Status(std::string_view)>&) override {
    return Status(Code::kFailedPrecondition, "checkpoint-mode workers roll back with RollBack");
  }
  void PeerDown(WorkerId) override {}
  Result<std::size_t> Flush() override { return std::size_t{0}; }
  Status Sync(std::int64_t) override { return Status::OK(); }
  bool recovering() const override { return false; }
  WorkerId id() const override { return id_; }
  Epoch epoch() const override { return epoch_; }
  Status health() const override { return Status::OK(); }
  Metrics GetMetrics() const override { return metrics_; }

 private:
  struct Item {
    bool marker = false;
    WorkerId sender = 0;
    std::uint64_t seq = 0;
    std::uint64_t snapshot = 0;
    std::string payload;
    bool start = false;
  };
  void Begin(std::uint64_t k);
  void SendFrame(WorkerId dest, bool marker, std::uint64_t snapshot, std::string_view payload);

  const WorkerId id_;
  const std::uint32_t n_;
  const Epoch epoch_;
  std::function<std::string()> snapshot_app_;
  std::uint64_t generation_ = 0;
  std::uint64_t next_seq_ = 1;
  std::uint64_t rng_;
  bool in_task_ = false;
  std::deque<Item> inbox_;
  struct Early {
    WorkerId sender = 0;
    std::string frame;
  };
  std::vector<Early> future_;  // frames of a generation this worker has not rolled back to yet
  std::vector<Frame> frames_;
  // The snapshot in progress (active_ != 0).
  std::uint64_t active_ = 0, last_started_ = 0;
  std::string app_state_;
  std::vector<bool> closed_;  // a sender's marker has arrived
  std::vector<Item> recorded_;
  std::vector<std::pair<std::uint64_t, std::string>> completed_;
  Metrics metrics_;
};

}  // namespace lstash::runtime
