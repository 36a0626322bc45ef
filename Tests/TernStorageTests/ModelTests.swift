import Testing

@testable import TernStorage

/// Randomized operation sequences against a plain array model: whatever the interleaving of
/// appends, completions, truncations, retention, clean reopens and crash reopens, the log reads
/// back exactly what the model says, and never loses an entry it reported durable.
@Suite("Commitlog: randomized against an in-memory model")
struct ModelTests {
    @Test("random operation sequences", arguments: Backend.allCases, [UInt64(1), 2, 3, 4, 5, 6])
    func randomOperations(_ backend: Backend, _ seed: UInt64) throws {
        guard let device = backend.make() else { return }
        defer { device.shutdown() }
        let dir = temporaryDirectory("model")
        defer { removeTree(dir) }
        var random = TestRandom(seed: seed)
        var model: [LogEntry] = []  // entries firstIndex... in order
        var term: UInt64 = 1
        var log = try Commitlog(directory: dir, device: device, options: tinyOptions)
        func check(_ step: Int) throws {
            #expect(log.lastIndex == (model.last?.index ?? log.lastIndex), "seed \(seed) step \(step)")
            guard let first = model.first else { return }
            #expect(log.firstIndex == first.index, "seed \(seed) step \(step)")
            let from = first.index + UInt64(random.below(model.count))
            let got = try log.read(from: from, maxBytes: random.below(3) == 0 ? 2000 : .max)
            let offset = Int(from - first.index)
            #expect(got == Array(model[offset..<(offset + got.count)]), "seed \(seed) step \(step) from \(from)")
            #expect(!got.isEmpty)
            #expect(try log.term(at: from) == model[offset].term)
        }
        for step in 0..<400 {
            switch random.below(20) {
            case 0..<9:
                let next = log.lastIndex + 1
                let entries = makeEntries(next...(next + UInt64(random.below(10))), term: term, random: &random, maxBody: 600)
                try log.append(entries)
                model += entries
            case 9..<12:
                try log.pump(wait: random.below(2) == 0)
            case 12:
                try log.flush()
            case 13, 14:
                guard let first = model.first else { continue }
                let keep = first.index - 1 + UInt64(random.below(model.count + 1))
                try log.truncate(after: keep)
                model.removeLast(model.count - Int(keep + 1 - first.index))
                term += 1
            case 15:
                try log.flush()
                let upTo = log.firstIndex + UInt64(random.below(Int(log.lastIndex + 2) - Int(log.firstIndex)))
                try log.deleteSegments(through: upTo)
                model.removeFirst(model.count - Int(log.lastIndex + 1 - log.firstIndex))
                #expect(log.firstIndex <= upTo + 1)
            case 16:
                try log.close()
                log = try Commitlog(directory: dir, device: device, options: tinyOptions)
                #expect(log.recoveryReport.isEmpty, "seed \(seed) step \(step): \(log.recoveryReport)")
            case 17:
                // Crash: the process dies with a batch possibly in flight and entries staged.
                let durable = log.durableIndex
                while device.batchesInFlight > 0 { _ = try device.reap(wait: true) }
                log = try Commitlog(directory: dir, device: device, options: tinyOptions)
                #expect(log.lastIndex >= durable, "seed \(seed) step \(step): lost durable entries")
                if let first = model.first, log.lastIndex >= first.index {
                    model.removeLast(model.count - Int(log.lastIndex + 1 - first.index))
                } else if model.first != nil {
                    model.removeAll()
                }
                term += 1
            default:
                try check(step)
            }
        }
        try log.flush()
        try check(400)
        try log.close()
    }
}
