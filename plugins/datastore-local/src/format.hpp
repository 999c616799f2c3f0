// On-disk formats of the local datastore: file names, the head, log segments and
// records, and the JSON of a resource. Internal to the plugin.
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/error.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

CNF_BEGIN_NAMESPACE
namespace detail::local {

// ---- names ---------------------------------------------------------------------------

/// Percent-escapes one path component: [A-Za-z0-9.-] stay (a leading '.' does not),
/// every other byte becomes %XX. The result never contains '/', is never "." or "..",
/// never starts with '.', and is never "_" (the directory of cluster-scoped resources).
std::string escape(std::string_view s);
/// The inverse of escape(); nullopt unless `s` is exactly what escape() produces.
std::optional<std::string> unescape(std::string_view s);

/// Directory of a namespace: "_" for cluster-scoped resources.
std::string ns_dir(std::string_view ns);
/// Namespace of a directory name; nullopt for names escape() cannot produce.
std::optional<std::string> ns_from_dir(std::string_view d);

/// File name of a resource: "<escaped>.json", or for long names "<prefix>~<hash>.json".
std::string file_name(std::string_view name);
struct parsed_file_name {
  std::string name;     ///< the full name, or (hashed) the unescaped prefix
  bool hashed = false;  ///< the real name is only in the file
};
std::optional<parsed_file_name> parse_file_name(std::string_view file);

/// Relative path of a resource under <dir>/v1/data.
std::string resource_path(const resource_key& k);

// ---- checksums -----------------------------------------------------------------------

std::uint32_t crc32(const void* data, std::size_t n, std::uint32_t crc = 0) noexcept;

// ---- head ----------------------------------------------------------------------------

inline constexpr std::size_t head_size = 128;

struct head {
  std::string boot;         ///< boot id of the machine that wrote it
  std::uint64_t seg = 0;    ///< active log segment (its first revision)
  std::uint64_t m_off = 0;  ///< offset in `seg` just past record m_rev (or the segment header)
  std::uint64_t m_rev = 0;  ///< every record <= m_rev is in the resource files
  std::uint64_t d_rev = 0;  ///< every record <= d_rev is durable (visible to readers)
};

void encode_head(const head& h, char* out /* head_size */);
bool decode_head(const char* in, std::size_t n, head& h);

// ---- log segments --------------------------------------------------------------------

inline constexpr std::size_t segment_header_size = 32;
void encode_segment_header(std::uint64_t first_rev, char* out /* segment_header_size */);
bool decode_segment_header(const char* in, std::size_t n, std::uint64_t& first_rev);
std::string segment_name(std::uint64_t first_rev);
std::optional<std::uint64_t> parse_segment_name(std::string_view file);

// ---- log records ---------------------------------------------------------------------

enum class op : std::uint8_t { create = 1, update = 2, remove = 3 };

struct record {
  std::uint64_t rev = 0;
  op what = op::create;
  std::uint32_t pid = 0;
  resource_key key;
  std::string body;        ///< JSON of the resource after the write; for remove its last state
  std::uint64_t seg = 0;   ///< segment holding the record
  std::uint64_t end = 0;   ///< offset just past the record in that segment
};

inline constexpr std::size_t record_header_size = 40;
inline constexpr std::size_t max_record_size = 64u << 20;

std::string encode_record(const record& r);

enum class decoded { ok, incomplete, corrupt };
/// Decodes one record from `n` available bytes; `used` is its size when ok.
decoded decode_record(const char* in, std::size_t n, record& out, std::size_t& used);

// ---- resources -----------------------------------------------------------------------

/// A resource as the JSON text kept in its file and in log records.
std::string encode_resource(const resource& r);
/// Parses that JSON; errors are errc::invalid and start with `where`.
result<resource> decode_resource(std::string_view text, std::string_view where);
/// The text of a resource file: the resource's JSON with a last member
/// "checksum":"crc32:<hex>" over the bytes before it, and a newline. Files are rewritten
/// in place, so a lock-free reader can see one half-written: the checksum tells.
std::string encode_resource_file(std::string_view body);
/// Parses a resource file; `damaged` is set when the text is cut short, mixed or altered
/// (checksum or JSON wrong), as opposed to well-formed but wrong content.
result<resource> decode_resource_file(std::string_view text, std::string_view where, bool& damaged);

/// Checks a resource given to create/update: key, spec (JSON object), sizes. Returns
/// the resource with its spec in canonical (compact) form.
result<resource> check_resource(const resource& r);
result<void> check_key(const resource_key& k);

std::string to_rev(std::uint64_t r);
bool parse_rev(std::string_view s, std::uint64_t& out);

}  // namespace detail::local
CNF_END_NAMESPACE
