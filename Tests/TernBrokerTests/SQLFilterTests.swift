import Testing

@testable import TernBroker

@Suite("Broker: SQL92 filters")
struct SQLFilterTests {
    let props = ["a": "5", "b": "hello", "c": "true", "price": "12.5", "region": "eu-west"]

    func match(_ e: String, tag: String = "red") throws -> Bool {
        try SQLFilter(e).matches(properties: props, tag: tag)
    }

    @Test("nesting and operators are bounded: deep parentheses, NOT chains and long AND chains are refused, not a stack overflow (fuzz corpus sql)")
    func bounded() throws {
        let deep = String(repeating: "(", count: 5_000) + "a = 1" + String(repeating: ")", count: 5_000)
        #expect { try SQLFilter(deep) } throws: { "\($0)".contains("deeper than 32") }
        #expect { try SQLFilter(String(repeating: "NOT ", count: 5_000) + "a = 1") } throws: { "\($0)".contains("deeper than 32") }
        let chain = (0..<300).map { "a = \($0)" }.joined(separator: " AND ")
        #expect { try SQLFilter(chain) } throws: { "\($0)".contains("more than 256 AND, OR and NOT") }
        // Just inside the bounds: parses and evaluates.
        let nested = String(repeating: "(", count: 31) + "a = 1" + String(repeating: ")", count: 31)
        #expect(try SQLFilter("NOT " + nested).matches(properties: ["a": "2"], tag: ""))
        let wide = (0..<256).map { "a = \($0)" }.joined(separator: " OR ")
        #expect(try SQLFilter(wide).matches(properties: ["a": "255"], tag: ""))
    }

    @Test("comparisons, numeric and string")
    func comparisons() throws {
        #expect(try match("a > 3"))
        #expect(try !match("a > 5"))
        #expect(try match("a >= 5 AND a <= 5"))
        #expect(try match("a = 5") && match("a = 5.0") && match("a <> 6") && match("a != 6"))
        #expect(try match("b = 'hello'") && !match("b = 'Hello'") && match("b <> 'x'"))
        #expect(try match("price < 13") && match("price > -1"))
        #expect(try match("region = 'eu-west'"))
        #expect(try !match("b > 3"), "a string that is not a number does not order against one")
    }

    @Test("BETWEEN, IN, IS NULL, booleans and TAGS")
    func predicates() throws {
        #expect(try match("a BETWEEN 1 AND 5") && !match("a BETWEEN 6 AND 9") && match("a NOT BETWEEN 6 AND 9"))
        #expect(try match("b IN ('x', 'hello')") && !match("b IN ('x')") && match("b NOT IN ('x', 'y')"))
        #expect(try match("missing IS NULL") && match("a IS NOT NULL") && !match("a IS NULL"))
        #expect(try match("c = TRUE") && !match("c = FALSE") && match("TRUE") && !match("FALSE"))
        #expect(try match("TAGS = 'red'") && !match("TAGS = 'red'", tag: "blue") && match("TAGS IS NULL", tag: ""))
    }

    @Test("three-valued logic: a missing property makes a comparison unknown, and NOT unknown is unknown")
    func unknown() throws {
        #expect(try !match("missing = 1"))
        #expect(try !match("NOT (missing = 1)"))
        #expect(try !match("missing <> 1"))
        #expect(try match("missing = 1 OR a = 5"))
        #expect(try !match("missing = 1 AND a = 5"))
        #expect(try match("NOT (missing = 1 AND a = 6)"), "unknown AND false is false; NOT false is true")
        #expect(try !match("missing IN (1, 2)") && !match("missing NOT IN (1, 2)"))
    }

    @Test("precedence: NOT binds tighter than AND, AND tighter than OR; parentheses group")
    func precedence() throws {
        #expect(try match("a = 1 OR a = 5 AND b = 'hello'"))
        #expect(try !match("(a = 1 OR a = 5) AND b = 'x'"))
        #expect(try match("NOT a = 1 AND b = 'hello'"))
        #expect(try match("b = 'it''s'") == false)
        #expect(try SQLFilter("b = 'it''s'").matches(properties: ["b": "it's"], tag: ""))
    }

    @Test(
        "syntax errors name their column",
        arguments: [
            ("a >", 4), ("a > 5 AND", 10), ("(a = 1", 7), ("a = 'open", 5), ("a ! 3", 3), ("a = 1 b", 7),
            ("", 1), ("a BETWEEN 1 5", 13), ("a IN (1, b)", 10), ("a IS 5", 6), ("a", 2),
        ])
    func syntaxErrors(expression: String, column: Int) {
        do {
            _ = try SQLFilter(expression)
            Issue.record("\(expression) parsed")
        } catch {
            #expect(error.column == column, "\(expression): \(error)")
        }
    }
}
