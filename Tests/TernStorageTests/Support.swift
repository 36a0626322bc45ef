import Glibc
import Testing

@testable import TernStorage

/// The two real backends every commitlog test runs on.
enum Backend: String, CaseIterable, CustomTestStringConvertible {
    case posix, uring
    var testDescription: String { rawValue }

    /// The device, or nil (after printing why) when the kernel refuses io_uring.
    func make() -> (any StorageDevice)? {
        switch self {
        case .posix:
            return PosixDevice()
        case .uring:
            do {
                return try UringDevice()
            } catch {
                print("SKIP io_uring variant: \(error)")
                return nil
            }
        }
    }
}

func temporaryDirectory(_ name: String) -> String {
    var template = Array("/tmp/tern-test-\(name)-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
}

func removeTree(_ path: String) {
    _ = system("rm -rf '\(path)'")
}

func copyTree(_ from: String, _ to: String) {
    _ = system("rm -rf '\(to)' && cp -a '\(from)' '\(to)'")
}

/// A small deterministic generator for test data (tests must replay exactly).
struct TestRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
}

func makeEntries(_ range: ClosedRange<UInt64>, term: UInt64, random: inout TestRandom, maxBody: Int = 300) -> [LogEntry] {
    range.map { LogEntry(index: $0, term: term, type: UInt8($0 % 3), body: random.bytes(random.below(maxBody + 1))) }
}

func fileSize(_ path: String) -> Int {
    var info = stat()
    return stat(path, &info) == 0 ? Int(info.st_size) : -1
}

func truncateFile(_ path: String, _ size: Int) {
    #expect(truncate(path, off_t(size)) == 0)
}

func flipBit(_ path: String, byte offset: Int, bit: Int) {
    let fd = open(path, O_RDWR)
    defer { close(fd) }
    var b: UInt8 = 0
    #expect(pread(fd, &b, 1, off_t(offset)) == 1)
    b ^= UInt8(1 << bit)
    #expect(pwrite(fd, &b, 1, off_t(offset)) == 1)
}

let tinyOptions = CommitlogOptions(segmentSizeBytes: 8192, maxEntryBodyBytes: 4096)
