// SQL92 property filters, RocketMQ's subset, evaluated by the broker against a message's
// properties (and `TAGS`, the message's tag). Grammar, case-insensitive keywords:
//
//   expr    := or
//   or      := and ("OR" and)*
//   and     := not ("AND" not)*
//   not     := "NOT" not | predicate
//   predicate := "(" expr ")" | "TRUE" | "FALSE"
//              | operand ( ("=" | "<>" | "!=" | ">" | ">=" | "<" | "<=") operand
//                        | ["NOT"] "BETWEEN" operand "AND" operand
//                        | ["NOT"] "IN" "(" literal ("," literal)* ")"
//                        | "IS" ["NOT"] "NULL" )
//   operand := identifier | 'string' ('' escapes a quote) | number | TRUE | FALSE
//
// Three-valued logic, as in SQL: a comparison with a missing property, or between a number and a
// value that is not one, is unknown; NOT unknown is unknown; a message matches only when the
// whole expression is true. A syntax error names the 1-based column where it is.

public struct SQLSyntaxError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public var column: Int
    public var description: String { "SQL filter syntax error at column \(column): \(message)" }
}

public struct SQLFilter: Sendable, Equatable {
    indirect enum Node: Equatable, Sendable {
        case and(Node, Node)
        case or(Node, Node)
        case not(Node)
        case constant(Bool)
        case compare(Operand, String, Operand)
        case between(Operand, Operand, Operand, negated: Bool)
        case isIn(Operand, [Value], negated: Bool)
        case isNull(Operand, negated: Bool)
    }

    enum Value: Equatable, Sendable {
        case string(String)
        case number(Double)
        case bool(Bool)
    }

    enum Operand: Equatable, Sendable {
        case property(String)
        case literal(Value)
    }

    let root: Node
    public let expression: String

    public init(_ expression: String) throws(SQLSyntaxError) {
        self.expression = expression
        var p = Parser(tokens: try Lexer.tokens(expression), length: expression.count)
        root = try p.parseExpression()
        if let t = p.peek { throw SQLSyntaxError(message: "unexpected \(t.text) after the end of the expression", column: t.column) }
    }

    /// True when the message with these properties and tag passes the filter.
    public func matches(properties: [String: String], tag: String) -> Bool {
        SQLFilter.evaluate(root, properties, tag) == true
    }

    // MARK: Evaluation

    static func lookup(_ name: String, _ properties: [String: String], _ tag: String) -> String? {
        if name == "TAGS" { return tag.isEmpty ? nil : tag }
        return properties[name]
    }

    static func resolve(_ o: Operand, _ properties: [String: String], _ tag: String) -> Value? {
        switch o {
        case .literal(let v): return v
        case .property(let name):
            guard let text = lookup(name, properties, tag) else { return nil }
            return .string(text)
        }
    }

    /// Numeric order of two values (a property's text is read as a number): nil when either is
    /// not a number. As in RocketMQ, >, >=, <, <= and BETWEEN compare numbers only.
    static func order(_ a: Value, _ b: Value) -> Int? {
        func number(_ v: Value) -> Double? {
            switch v {
            case .number(let x): return x
            case .string(let s): return Double(s)
            case .bool: return nil
            }
        }
        guard let x = number(a), let y = number(b) else { return nil }
        return x < y ? -1 : (x > y ? 1 : 0)
    }

    /// Equality: numbers numerically (a property's text read as a number), strings exactly,
    /// booleans with booleans or the text true/false; nil (unknown) when the types do not meet.
    static func equal(_ a: Value, _ b: Value) -> Bool? {
        switch (a, b) {
        case (.string(let x), .string(let y)): return x == y
        case (.number, _), (_, .number): return order(a, b).map { $0 == 0 }
        case (.bool(let x), .bool(let y)): return x == y
        case (.string(let s), .bool(let y)), (.bool(let y), .string(let s)):
            switch s.lowercased() {
            case "true": return y
            case "false": return !y
            default: return nil
            }
        }
    }

    static func evaluate(_ n: Node, _ p: [String: String], _ tag: String) -> Bool? {
        switch n {
        case .constant(let b): return b
        case .and(let a, let b):
            let x = evaluate(a, p, tag), y = evaluate(b, p, tag)
            if x == false || y == false { return false }
            return x == true && y == true ? true : nil
        case .or(let a, let b):
            let x = evaluate(a, p, tag), y = evaluate(b, p, tag)
            if x == true || y == true { return true }
            return x == false && y == false ? false : nil
        case .not(let a):
            return evaluate(a, p, tag).map { !$0 }
        case .compare(let l, let op, let r):
            guard let a = resolve(l, p, tag), let b = resolve(r, p, tag) else { return nil }
            switch op {
            case "=": return equal(a, b)
            case "<>": return equal(a, b).map { !$0 }
            default:
                guard let c = order(a, b) else { return nil }
                switch op {
                case ">": return c > 0
                case ">=": return c >= 0
                case "<": return c < 0
                default: return c <= 0
                }
            }
        case .between(let x, let lo, let hi, let negated):
            guard let v = resolve(x, p, tag), let a = resolve(lo, p, tag), let b = resolve(hi, p, tag),
                let c1 = order(v, a), let c2 = order(v, b)
            else { return nil }
            let inside = c1 >= 0 && c2 <= 0
            return negated ? !inside : inside
        case .isIn(let x, let list, let negated):
            guard let v = resolve(x, p, tag) else { return nil }
            let results = list.map { equal(v, $0) }
            if results.contains(true) { return !negated }
            if results.contains(nil) { return nil }
            return negated
        case .isNull(let x, let negated):
            let missing: Bool
            if case .property(let name) = x { missing = lookup(name, p, tag) == nil } else { missing = false }
            return negated ? !missing : missing
        }
    }
}

// MARK: - Lexer

struct Token: Equatable {
    enum Kind: Equatable { case identifier, string, number, symbol, keyword }
    var kind: Kind
    var text: String
    var column: Int
}

enum Lexer {
    static let keywords: Set<String> = ["AND", "OR", "NOT", "BETWEEN", "IN", "IS", "NULL", "TRUE", "FALSE"]

    static func tokens(_ s: String) throws(SQLSyntaxError) -> [Token] {
        let chars = Array(s)
        var out: [Token] = []
        var i = 0
        while i < chars.count {
            let c = chars[i]
            let column = i + 1
            if c == " " || c == "\t" || c == "\n" || c == "\r" {
                i += 1
            } else if c == "'" {
                var text = ""
                i += 1
                var closed = false
                while i < chars.count {
                    if chars[i] == "'" {
                        if i + 1 < chars.count && chars[i + 1] == "'" {
                            text.append("'")
                            i += 2
                            continue
                        }
                        closed = true
                        i += 1
                        break
                    }
                    text.append(chars[i])
                    i += 1
                }
                guard closed else { throw SQLSyntaxError(message: "a string is not closed", column: column) }
                out.append(Token(kind: .string, text: text, column: column))
            } else if c.isNumber
                || (c == "-" && i + 1 < chars.count && chars[i + 1].isNumber && (out.last.map { $0.kind == .symbol && $0.text != ")" } ?? true))
                || (c == "." && i + 1 < chars.count && chars[i + 1].isNumber)
            {
                var j = i + 1
                while j < chars.count
                    && (chars[j].isNumber || chars[j] == "." || chars[j] == "e" || chars[j] == "E"
                        || ((chars[j] == "-" || chars[j] == "+") && (chars[j - 1] == "e" || chars[j - 1] == "E")))
                { j += 1 }
                var text = String(chars[i..<j])
                if text.hasSuffix("L") || text.hasSuffix("l") { text.removeLast() }
                guard Double(text) != nil else { throw SQLSyntaxError(message: "\(text) is not a number", column: column) }
                out.append(Token(kind: .number, text: text, column: column))
                i = j
            } else if c.isLetter || c == "_" || c == "$" {
                var j = i + 1
                while j < chars.count && (chars[j].isLetter || chars[j].isNumber || chars[j] == "_" || chars[j] == "." || chars[j] == "$" || chars[j] == "-") {
                    j += 1
                }
                let text = String(chars[i..<j])
                if keywords.contains(text.uppercased()) {
                    out.append(Token(kind: .keyword, text: text.uppercased(), column: column))
                } else {
                    out.append(Token(kind: .identifier, text: text, column: column))
                }
                i = j
            } else {
                let two = i + 1 < chars.count ? String(chars[i...(i + 1)]) : ""
                if ["<>", "!=", ">=", "<="].contains(two) {
                    out.append(Token(kind: .symbol, text: two == "!=" ? "<>" : two, column: column))
                    i += 2
                } else if "=<>(),".contains(c) {
                    out.append(Token(kind: .symbol, text: String(c), column: column))
                    i += 1
                } else {
                    throw SQLSyntaxError(message: "unexpected character \(c)", column: column)
                }
            }
        }
        return out
    }
}

// MARK: - Parser

struct Parser {
    let tokens: [Token]
    let length: Int
    var k = 0
    /// Parentheses and NOTs open around the current token, and AND, OR and NOT seen: the parser,
    /// the evaluator and the tree's own destruction recurse that deep, so both are bounded (a
    /// 4 KiB filter of parentheses overflowed a debug build's stack; fuzz corpus `sql`).
    var nesting = 0
    var operators = 0
    static let maxNesting = 32
    static let maxOperators = 256

    mutating func enter() throws(SQLSyntaxError) {
        nesting += 1
        guard nesting <= Parser.maxNesting else { throw error("the expression nests parentheses and NOT deeper than \(Parser.maxNesting)") }
    }

    mutating func countOperator() throws(SQLSyntaxError) {
        operators += 1
        guard operators <= Parser.maxOperators else { throw error("the expression has more than \(Parser.maxOperators) AND, OR and NOT") }
    }

    init(tokens: [Token], length: Int) {
        self.tokens = tokens
        self.length = length
    }

    var peek: Token? { k < tokens.count ? tokens[k] : nil }
    var endColumn: Int { length + 1 }

    mutating func next() -> Token? {
        defer { k += 1 }
        return peek
    }

    func isKeyword(_ word: String) -> Bool { peek?.kind == .keyword && peek?.text == word }
    func isSymbol(_ s: String) -> Bool { peek?.kind == .symbol && peek?.text == s }

    mutating func expect(keyword: String) throws(SQLSyntaxError) {
        guard isKeyword(keyword) else { throw error("expected \(keyword)") }
        k += 1
    }

    mutating func expect(symbol: String) throws(SQLSyntaxError) {
        guard isSymbol(symbol) else { throw error("expected \(symbol)") }
        k += 1
    }

    func error(_ what: String) -> SQLSyntaxError {
        if let t = peek { return SQLSyntaxError(message: "\(what), found \(t.kind == .string ? "'\(t.text)'" : t.text)", column: t.column) }
        return SQLSyntaxError(message: "\(what), found the end", column: endColumn)
    }

    mutating func parseExpression() throws(SQLSyntaxError) -> SQLFilter.Node {
        guard peek != nil else { throw error("expected an expression") }
        return try parseOr()
    }

    mutating func parseOr() throws(SQLSyntaxError) -> SQLFilter.Node {
        var left = try parseAnd()
        while isKeyword("OR") {
            try countOperator()
            k += 1
            left = .or(left, try parseAnd())
        }
        return left
    }

    mutating func parseAnd() throws(SQLSyntaxError) -> SQLFilter.Node {
        var left = try parseNot()
        while isKeyword("AND") {
            try countOperator()
            k += 1
            left = .and(left, try parseNot())
        }
        return left
    }

    mutating func parseNot() throws(SQLSyntaxError) -> SQLFilter.Node {
        if isKeyword("NOT") {
            try countOperator()
            try enter()
            k += 1
            defer { nesting -= 1 }
            return .not(try parseNot())
        }
        return try parsePredicate()
    }

    mutating func parsePredicate() throws(SQLSyntaxError) -> SQLFilter.Node {
        if isSymbol("(") {
            try enter()
            k += 1
            defer { nesting -= 1 }
            let inner = try parseOr()
            try expect(symbol: ")")
            return inner
        }
        let left = try parseOperand()
        if let t = peek, t.kind == .symbol, ["=", "<>", ">", ">=", "<", "<="].contains(t.text) {
            k += 1
            return .compare(left, t.text, try parseOperand())
        }
        var negated = false
        if isKeyword("NOT") {
            k += 1
            negated = true
            guard isKeyword("BETWEEN") || isKeyword("IN") else { throw error("expected BETWEEN or IN after NOT") }
        }
        if isKeyword("BETWEEN") {
            k += 1
            let lo = try parseOperand()
            try expect(keyword: "AND")
            return .between(left, lo, try parseOperand(), negated: negated)
        }
        if isKeyword("IN") {
            k += 1
            try expect(symbol: "(")
            var list: [SQLFilter.Value] = []
            repeat {
                if isSymbol(",") { k += 1 }
                guard case .literal(let v) = try parseOperand() else { throw SQLSyntaxError(message: "IN lists literals only", column: tokens[k - 1].column) }
                list.append(v)
            } while isSymbol(",")
            try expect(symbol: ")")
            return .isIn(left, list, negated: negated)
        }
        if isKeyword("IS") {
            k += 1
            var not = false
            if isKeyword("NOT") {
                k += 1
                not = true
            }
            try expect(keyword: "NULL")
            return .isNull(left, negated: not)
        }
        if case .literal(.bool(let b)) = left { return .constant(b) }
        throw error("expected a comparison, BETWEEN, IN or IS")
    }

    mutating func parseOperand() throws(SQLSyntaxError) -> SQLFilter.Operand {
        guard let t = peek else { throw error("expected a property or a value") }
        switch t.kind {
        case .identifier:
            k += 1
            return .property(t.text)
        case .string:
            k += 1
            return .literal(.string(t.text))
        case .number:
            k += 1
            return .literal(.number(Double(t.text)!))
        case .keyword where t.text == "TRUE" || t.text == "FALSE":
            k += 1
            return .literal(.bool(t.text == "TRUE"))
        default:
            throw error("expected a property or a value")
        }
    }
}
