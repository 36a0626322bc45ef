// Signal handling for commands that stop on SIGTERM or SIGINT. Each signal's dispatch source is
// held by the `StopSignals` value for as long as it lives: a source that nothing holds is
// released and its signal then does nothing at all (the disposition is SIG_IGN). `tern cluster
// up` once kept its SIGINT source only in a closure that the SIGTERM source's replaced, and
// Ctrl-C stopped nothing (ClusterUpSignalTests).
import Dispatch
import Foundation

public final class StopSignals: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []

    /// Ignores the default action of `signals` and calls `handler` on a global queue for each
    /// arrival instead.
    public init(_ signals: [Int32], handler: @escaping @Sendable (Int32) -> Void) {
        for sig in signals {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { handler(sig) }
            source.resume()
            sources.append(source)
        }
    }

    public func cancel() {
        for s in sources { s.cancel() }
        sources = []
    }
}
