// One way to read quantiles off measurements, for every report the commands print (the storage
// and client benchmarks, the chaos report): HdrHistogram, three significant digits. Values are
// recorded as whole multiples of `unit` (a value below one unit counts as zero; above
// `highest` units as `highest`).
import Histogram

public struct Quantiles: Sendable {
    private var histogram: Histogram<UInt64>
    /// What one recorded integer stands for (1e-6 for seconds recorded as microseconds).
    public let unit: Double
    private let highest: UInt64

    public init(unit: Double = 1, highest: UInt64 = 3_600_000_000_000) {
        precondition(unit > 0, "unit must be positive")
        self.unit = unit
        self.highest = highest
        histogram = Histogram<UInt64>(highestTrackableValue: highest, numberOfSignificantValueDigits: .three)
    }

    public init(_ values: some Sequence<Double>, unit: Double = 1) {
        self.init(unit: unit)
        for v in values { record(v) }
    }

    public mutating func record(_ value: Double) {
        let scaled = Swift.max(0, (value / unit).rounded())
        _ = histogram.record(scaled >= Double(highest) ? highest : UInt64(scaled))
    }

    public mutating func record(_ value: UInt64) {
        _ = histogram.record(min(value, highest))
    }

    public var count: Int { Int(histogram.totalCount) }

    /// The value at quantile `q` (0...1), in the recorded values' unit; 0 when nothing was recorded.
    public func value(at q: Double) -> Double {
        precondition(q >= 0 && q <= 1, "quantile \(q) is outside 0...1")
        guard histogram.totalCount > 0 else { return 0 }
        return Double(histogram.valueAtPercentile(q * 100)) * unit
    }

    public var max: Double { histogram.totalCount > 0 ? Double(histogram.max) * unit : 0 }
}
