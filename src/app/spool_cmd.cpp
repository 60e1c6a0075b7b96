// spool_cmd.cpp - check, dump and replay of a stopped server's spool directory (contract in spool_cmd.h).
#include "app/spool_cmd.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/event.h"
#include "ingest/batch_writer.h"
#include "ingest/dead_letter.h"
#include "ingest/spool.h"
#include "sink/sink.h"

namespace kiroku {
namespace {

// Events per sink transaction of a replay; a refused one is retried alone.
constexpr std::size_t kReplayChunk = 1000;

void say(std::FILE* f, const char* format, ...) __attribute__((format(printf, 2, 3)));
void say(std::FILE* f, const char* format, ...) {
  va_list ap;
  va_start(ap, format);
  std::vfprintf(f, format, ap);
  va_end(ap);
}

// The locks and the files of a spool directory, held for the command's life.
struct Held {
  std::unique_ptr<Spool> spool;
  std::unique_ptr<DeadLetterFile> dead_letter;
};

// Takes both locks of the directory; exit code 2 and a message when it cannot.
int hold(const ServeConfig& cfg, Held& held, std::FILE* err) {
  std::error_code ec;
  if (!std::filesystem::is_directory(cfg.spool_dir, ec)) {
    say(err, "kiroku spool: %s is not a spool directory (set --spool-dir)\n", cfg.spool_dir.c_str());
    return 2;
  }
  auto sp = Spool::open({cfg.spool_dir, ~0ull, false});
  if (!sp.ok()) {
    say(err, "kiroku spool: %s; stop the server first\n", sp.status().message().c_str());
    return 2;
  }
  held.spool = std::move(*sp);
  // The dead-letter file's bound does not matter here (only replace() writes).
  auto dl = DeadLetterFile::open({cfg.spool_dir + "/" + std::string(kDeadLetterFileName), ~0ull});
  if (!dl.ok()) {
    say(err, "kiroku spool: %s; stop the server first\n", dl.status().message().c_str());
    return 2;
  }
  held.dead_letter = std::move(*dl);
  return 0;
}

std::string file_name(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Quarantined segments (*.kseg.corrupt), in name order.
std::vector<std::string> quarantined(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".kseg.corrupt")) out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool read_text(const std::string& path, std::string& text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  text = ss.str();
  return true;
}

// Calls fn(line) for every line of `text` (without its '\n'); a last line
// without one is passed too.
template <typename Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    fn(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
}

int check(Held& held, std::FILE* out) {
  std::vector<std::byte> scratch;
  std::size_t bad = 0;
  std::uint64_t events = 0;
  const auto segments = held.spool->leftover();
  for (const SegmentInfo& seg : segments) {
    auto r = read_segment(seg.path, scratch, [](std::string_view, std::size_t) { return Status{}; });
    if (!r.ok()) {
      say(out, "%s: unreadable: %s\n", seg.path.c_str(), r.status().message().c_str());
      ++bad;
      continue;
    }
    events += r->records;
    switch (r->tail) {
      case SegmentReadResult::Tail::clean:
        say(out, "%s: ok, %llu events\n", seg.path.c_str(), static_cast<unsigned long long>(r->records));
        break;
      case SegmentReadResult::Tail::torn:
        ++bad;
        say(out, "%s: torn at offset %llu after %llu whole events (a crash mid-write; those events are replayed)\n",
            seg.path.c_str(), static_cast<unsigned long long>(r->tail_offset),
            static_cast<unsigned long long>(r->records));
        break;
      case SegmentReadResult::Tail::corrupt:
        ++bad;
        say(out,
            "%s: corrupt at offset %llu after %llu whole events (bad header, length or checksum; "
            "what follows is not replayed)\n",
            seg.path.c_str(), static_cast<unsigned long long>(r->tail_offset),
            static_cast<unsigned long long>(r->records));
        break;
    }
  }
  for (const std::string& path : quarantined(held.spool->dir()))
    say(out, "%s: quarantined earlier as corrupt (never replayed)\n", path.c_str());

  std::string text;
  std::size_t lines = 0;
  std::size_t bad_lines = 0;
  read_text(held.dead_letter->path(), text);
  std::vector<std::byte> records;
  for_each_line(text, [&](std::string_view line) {
    ++lines;
    std::uint64_t id = 0;
    records.clear();
    if (!parse_dead_letter_line(line, records, id)) {
      ++bad_lines;
      say(out, "%s: line %zu is not a dead-letter event\n", held.dead_letter->path().c_str(), lines);
    }
  });
  say(out, "%s: %zu events%s\n", held.dead_letter->path().c_str(), lines - bad_lines,
      bad_lines ? ", some lines unreadable" : "");
  bad += bad_lines > 0 ? 1 : 0;
  say(out, "%zu segments, %llu events in the spool, %zu dead-lettered; %s\n", segments.size(),
      static_cast<unsigned long long>(events), lines - bad_lines,
      bad == 0 ? "everything is whole" : "some files are torn or corrupt");
  return bad == 0 ? 0 : 1;
}

int dump(Held& held, std::FILE* out) {
  std::vector<std::byte> scratch;
  std::string line;
  int rc = 0;
  for (const SegmentInfo& seg : held.spool->leftover()) {
    const std::string name = file_name(seg.path);
    auto r = read_segment(seg.path, scratch, [&](std::string_view records, std::size_t) -> Status {
      RecordReader reader(records);
      EventView e;
      while (reader.next(e)) {
        line = "{\"source\":\"spool\",\"segment\":\"" + name + "\",";
        append_event_members(line, e);
        line += "}\n";
        std::fwrite(line.data(), 1, line.size(), out);
      }
      return {};
    });
    if (!r.ok() || r->tail != SegmentReadResult::Tail::clean) rc = 1;  // `check` says what
  }
  std::string text;
  read_text(held.dead_letter->path(), text);
  std::vector<std::byte> records;
  for_each_line(text, [&](std::string_view l) {
    std::uint64_t id = 0;
    records.clear();
    if (!l.starts_with('{') || !parse_dead_letter_line(l, records, id)) {
      rc = 1;
      return;
    }
    line = "{\"source\":\"dead-letter\",";
    line.append(l.substr(1));
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), out);
  });
  return rc;
}

std::int64_t unix_us_now() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int replay(Held& held, const ServeConfig& cfg, std::FILE* out, std::FILE* err) {
  std::string text;
  read_text(held.dead_letter->path(), text);
  // Every line with its record (empty for a line that is not an event: kept as is).
  struct Line {
    std::string_view text;
    std::vector<std::byte> record;
    bool stored = false;
    std::string error;  // the new error of a row refused again
    const char* reason = nullptr;
  };
  std::vector<Line> lines;
  for_each_line(text, [&](std::string_view l) {
    Line line{l, {}, false, {}, nullptr};
    std::uint64_t id = 0;
    if (!parse_dead_letter_line(l, line.record, id)) line.record.clear();
    lines.push_back(std::move(line));
  });
  if (lines.empty()) {
    say(out, "%s is empty: nothing to replay\n", held.dead_letter->path().c_str());
    return 0;
  }

  SinkOptions so;
  so.table = cfg.table;
  so.max_open = 1;
  so.max_idle = 1;
  so.durable_commits = true;
  auto made = make_sink(cfg.sink, so);
  if (!made.ok()) {
    say(err, "kiroku spool replay: --sink: %s\n", made.status().message().c_str());
    return 2;
  }
  std::unique_ptr<Sink> sink = std::move(*made);
  if (Status st = sink->open(); !st.ok()) {
    say(err, "kiroku spool replay: --sink: %s\n", st.message().c_str());
    return st.kind() == ErrorKind::transient ? 1 : 2;
  }

  // Chunks of events; a refused chunk is retried one event at a time.
  Status failure;
  std::vector<std::byte> chunk;
  std::size_t i = 0;
  while (i < lines.size() && failure.ok()) {
    chunk.clear();
    std::size_t n = 0;
    std::size_t end = i;
    for (; end < lines.size() && n < kReplayChunk; ++end) {
      if (lines[end].record.empty()) continue;
      chunk.insert(chunk.end(), lines[end].record.begin(), lines[end].record.end());
      ++n;
    }
    Status st = n == 0 ? Status{} : sink->write({reinterpret_cast<const char*>(chunk.data()), chunk.size()}, n);
    if (st.ok()) {
      for (std::size_t k = i; k < end; ++k) lines[k].stored = !lines[k].record.empty();
    } else if (st.kind() == ErrorKind::invalid) {
      for (std::size_t k = i; k < end && failure.ok(); ++k) {
        Line& l = lines[k];
        if (l.record.empty()) continue;
        Status one = sink->write({reinterpret_cast<const char*>(l.record.data()), l.record.size()}, 1);
        if (one.ok()) {
          l.stored = true;
        } else if (one.kind() == ErrorKind::invalid) {
          l.error = one.message();
          l.reason = kRejectionReasons.back().data();
          for (std::string_view r : kRejectionReasons)
            if (r == sink->rejection_reason()) l.reason = r.data();
        } else {
          failure = one;
        }
      }
    } else {
      failure = st;
    }
    i = end;
  }

  // What stays: the lines not stored, with their new error where there is one.
  std::string keep;
  std::size_t stored = 0;
  std::size_t refused = 0;
  for (const Line& l : lines) {
    if (l.stored) {
      ++stored;
      continue;
    }
    if (!l.error.empty()) {
      ++refused;
      RecordReader reader({reinterpret_cast<const char*>(l.record.data()), l.record.size()});
      EventView e;
      reader.next(e);
      append_dead_letter_line(keep, e, l.reason, l.error, unix_us_now());
    } else {
      keep.append(l.text);
      keep += '\n';
    }
  }
  if (Status st = held.dead_letter->replace(keep); !st.ok()) {
    // The stored events stay in the file too: replaying them again is harmless.
    say(err, "kiroku spool replay: %s\n", st.message().c_str());
    return 1;
  }
  say(out, "replayed %s: %zu events stored, %zu still refused, %zu left in the file\n",
      held.dead_letter->path().c_str(), stored, refused, lines.size() - stored);
  if (!failure.ok()) {
    say(err, "kiroku spool replay: stopped: %s\n", failure.message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int run_spool_command(std::string_view command, const ServeConfig& cfg, std::FILE* out, std::FILE* err) {
  Held held;
  if (int rc = hold(cfg, held, err); rc != 0) return rc;
  if (command == "check") return check(held, out);
  if (command == "dump") return dump(held, out);
  if (command == "replay") return replay(held, cfg, out, err);
  say(err, "kiroku spool: unknown command %.*s\n", static_cast<int>(command.size()), command.data());
  return 2;
}

}  // namespace kiroku
