// Errors that the storage layer reports to its caller. Errors caused by the environment (disk full,
// I/O error, a corrupt file) are values of this type; errors the program causes itself (a bad
// argument it controls) are preconditions and trap.
#if canImport(Glibc)
    import Glibc
#endif

/// An error from the storage layer: a code to switch on, a message for people, and the errno that
/// caused it when there was one.
public struct StorageError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A kind of storage failure. A struct rather than an enum so new codes never break a caller's switch.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public var description: String { name }
        /// EIO and friends: the device failed.
        public static let io = Code(name: "io")
        /// ENOSPC / EDQUOT: no room left.
        public static let noSpace = Code(name: "noSpace")
        /// A checksum, magic or index mismatch in persisted data.
        public static let corruption = Code(name: "corruption")
        /// A request the log cannot honour (entry too large, index out of range).
        public static let invalidArgument = Code(name: "invalidArgument")
        /// The backend cannot be used here (io_uring refused by the kernel).
        public static let unsupported = Code(name: "unsupported")
        /// An earlier write failed; the log must be closed and reopened to learn what is on disk.
        public static let failed = Code(name: "failed")
    }

    public var code: Code
    public var message: String
    public var errno: Int32?

    public init(_ code: Code, _ message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    /// Maps an errno from a system call on `what` to a storage error.
    public static func system(_ err: Int32, _ what: String) -> StorageError {
        let text = String(cString: strerror(err))
        switch err {
        case ENOSPC, EDQUOT: return StorageError(.noSpace, "\(what): \(text)", errno: err)
        case ENOSYS, EPERM, EOPNOTSUPP: return StorageError(.unsupported, "\(what): \(text)", errno: err)
        case EINVAL, ENOENT, EEXIST, EISDIR, ENOTDIR, EACCES: return StorageError(.invalidArgument, "\(what): \(text)", errno: err)
        default: return StorageError(.io, "\(what): \(text)", errno: err)
        }
    }

    public var description: String {
        if let errno { return "\(code): \(message) (errno \(errno))" }
        return "\(code): \(message)"
    }
}
