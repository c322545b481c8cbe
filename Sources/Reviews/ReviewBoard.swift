import Foundation
import GatehouseCore
import Logging

/// How reviews behave, from the `reviews` section and the rules that ask for them.
public struct ReviewSettings: Sendable {
    /// Groups whose members may decide reviews (a rule may narrow this further).
    public var approverGroups: [String]
    /// How long a held operation waits for a decision before it is refused.
    public var timeout: Duration
    /// Access grants last at most this long.
    public var maxGrantMinutes: Int
    /// Approvals an access request needs.
    public var accessApprovals: Int
    /// Open reviews at once, in all and per requester: a flood of held statements must not hold
    /// the gateway's memory or bury the reviewers.
    public var maxOpen: Int
    public var maxOpenPerRequester: Int
    public var node: String
    /// Closed reviews are forgotten after this long (their steps stay in the audit trail).
    public var retention: Duration

    public init(
        approverGroups: [String] = [], timeout: Duration = .seconds(300), maxGrantMinutes: Int = 480, accessApprovals: Int = 1,
        maxOpen: Int = 1000, maxOpenPerRequester: Int = 20, node: String = "gatehouse", retention: Duration = .seconds(90 * 86_400)
    ) {
        self.retention = retention
        self.approverGroups = approverGroups
        self.timeout = timeout
        self.maxGrantMinutes = maxGrantMinutes
        self.accessApprovals = accessApprovals
        self.maxOpen = maxOpen
        self.maxOpenPerRequester = maxOpenPerRequester
        self.node = node
    }
}

/// What a gateway asks to hold: the operation, who sent it, on which session, and what the policy
/// said. The digest is computed by the protocol that knows the operation's exact form.
public struct ReviewRequest: Sendable {
    public var session: String
    public var connection: String
    public var protocolName: String
    public var operation: String
    public var intent: String?
    public var digest: String
    public var requester: Principal
    public var client: ClientInfo
    public var decision: Decision
    /// From the rules that asked for review: at least this many approvals, by these groups.
    public var approvals: Int
    public var approverGroups: [[String]]

    public init(
        session: String, connection: String, protocolName: String, operation: String, intent: String?, digest: String,
        requester: Principal, client: ClientInfo, decision: Decision, approvals: Int = 1, approverGroups: [[String]] = []
    ) {
        self.session = session
        self.connection = connection
        self.protocolName = protocolName
        self.operation = operation
        self.intent = intent
        self.digest = digest
        self.requester = requester
        self.client = client
        self.decision = decision
        self.approvals = approvals
        self.approverGroups = approverGroups
    }
}

/// The approval lifecycle: requested → approved (→ executed) | denied | expired | abandoned, each
/// step persisted and recorded in the audit trail before anyone learns of it. A session holding an
/// operation waits here; approvers decide through the admin API.
public actor ReviewBoard {
    public typealias Recorder = @Sendable (AuditRecord) async throws -> Void
    public typealias Notifier = @Sendable (Review) async -> Void

    public nonisolated let settings: ReviewSettings
    public nonisolated let grants: AccessGrants
    private let store: ReviewStore
    private let record: Recorder
    private let notify: Notifier
    private let logger: Logger
    /// Pending and approved-not-yet-run reviews; closed ones live only in the store.
    private var active: [String: Review] = [:]
    private var waiters: [String: [CheckedContinuation<ReviewOutcome, Never>]] = [:]
    /// Reviews being opened (their first record is being written), counted against the limits.
    private var opening: [String: Int] = [:]
    /// The gateway is stopping: nothing new is held, nothing more is approved.
    private var stopping = false

    public init(store: ReviewStore, settings: ReviewSettings, logger: Logger, record: @escaping Recorder, notify: @escaping Notifier = { _ in }) {
        self.store = store
        self.settings = settings
        self.record = record
        self.notify = notify
        self.logger = logger
        self.grants = AccessGrants((try? store.activeGrants()) ?? [])
    }

    // MARK: Lifecycle of the gateway

    /// What a previous run left open can no longer run: its client is gone with that process.
    public func closeLeftovers() async {
        _ = try? store.pruneClosed(before: Date().addingTimeInterval(-Self.seconds(settings.retention)))
        let left = ((try? store.reviews(state: .pending, limit: Int.max)) ?? []) + ((try? store.reviews(state: .approved, limit: Int.max)) ?? [])
        for var review in left where review.kind == .operation || review.state == .pending {
            let reason = "the gateway restarted while the review was \(review.state.rawValue)"
            review.state = review.kind == .access ? .expired : .abandoned
            await close(&review, by: nil, reason: reason, step: review.kind == .access ? "expired" : "abandoned",
                        decision: .deny(rule: "review:\(review.id)", reason: reason))
        }
    }

    /// The gateway is stopping: nothing held may run later.
    public func abandonAll(reason: String) async {
        stopping = true
        for id in active.keys.sorted() {
            await abandon(id, reason: reason)
        }
    }

    // MARK: Holding

    /// Opens a review for an operation. Throws when it cannot be recorded (the operation must then
    /// be refused) or when too many are open.
    public func open(_ request: ReviewRequest) async throws -> Review {
        try reserve(request.requester)
        defer { release(request.requester) }
        let now = Date()
        var groups = request.approverGroups.filter { !$0.isEmpty }
        if !settings.approverGroups.isEmpty { groups.insert(settings.approverGroups, at: 0) }
        let review = Review(
            id: Self.newID(), kind: .operation, state: .pending, session: request.session, connection: request.connection,
            protocolName: request.protocolName, operation: request.operation, intent: request.intent, digest: request.digest,
            requester: request.requester, rule: request.decision.rule, reason: request.decision.reason,
            approvalsRequired: max(1, request.approvals), approverGroups: groups, approvals: [], createdAt: now,
            expiresAt: now.addingTimeInterval(Self.seconds(settings.timeout)))
        try await start(review, client: request.client)
        return review
    }

    /// Asks for access to a connection for some minutes.
    public func requestAccess(
        connection: String, minutes: Int, includeAgents: Bool, reason: String?, requester: Principal, client: ClientInfo
    ) async throws -> Review {
        guard requester.agent == nil else {
            throw ReviewRefusal(.agent, "access is requested by a person, not by an agent acting for one")
        }
        guard (1...settings.maxGrantMinutes).contains(minutes) else {
            throw ReviewRefusal(.invalid, "access can be asked for 1 to \(settings.maxGrantMinutes) minutes")
        }
        try reserve(requester)
        defer { release(requester) }
        let now = Date()
        let operation = "access to \(connection) for \(minutes) minutes" + (includeAgents ? ", agents acting for \(requester.subject) included" : "")
        let review = Review(
            id: Self.newID(), kind: .access, state: .pending, session: "access-" + UUID().uuidString.lowercased(),
            connection: connection, protocolName: "access", operation: operation, intent: reason,
            digest: ReviewDigest.of(protocolName: "access", connection: connection, principal: requester, operation: operation),
            requester: requester, rule: "access-request", reason: reason.map { "asked for: \($0)" } ?? "asked for access",
            approvalsRequired: max(1, settings.accessApprovals), approverGroups: [settings.approverGroups], approvals: [],
            createdAt: now, expiresAt: now.addingTimeInterval(Self.seconds(settings.timeout)),
            grantMinutes: minutes, grantIncludesAgents: includeAgents)
        try await start(review, client: client)
        return review
    }

    /// Counts a review being opened against the limits before its first await, so many sessions
    /// opening at once cannot pass them together.
    private func reserve(_ requester: Principal) throws {
        guard !stopping else { throw ReviewRefusal(.invalid, "the gateway is stopping") }
        let key = requester.issuer + "\u{0}" + requester.subject
        guard active.count + opening.values.reduce(0, +) < settings.maxOpen else {
            throw ReviewRefusal(.invalid, "too many reviews are waiting on this gateway")
        }
        let mine = active.values.filter { $0.requester.subject == requester.subject && $0.requester.issuer == requester.issuer }.count
            + opening[key, default: 0]
        guard mine < settings.maxOpenPerRequester else {
            throw ReviewRefusal(.invalid, "\(requester.subject) already has \(mine) reviews waiting")
        }
        opening[key, default: 0] += 1
    }

    private func release(_ requester: Principal) {
        let key = requester.issuer + "\u{0}" + requester.subject
        opening[key, default: 1] -= 1
        if opening[key] == 0 { opening[key] = nil }
    }

    private func start(_ review: Review, client: ClientInfo) async throws {
        do {
            try store.save(review)
            try await record(stepRecord(review, step: "requested", actor: review.requester, client: client,
                                        decision: Decision(effect: .review, rule: review.rule, reason: review.reason)))
        } catch let refusal as ReviewRefusal {
            throw refusal
        } catch {
            var failed = review
            failed.state = .abandoned
            failed.closeReason = "the review could not be recorded"
            try? store.save(failed)
            throw ReviewRefusal(.auditUnavailable, "the review could not be recorded; the operation is refused")
        }
        active[review.id] = review
        let id = review.id
        let deadline = review.expiresAt
        Task { [weak self] in
            try? await Task.sleep(for: .seconds(max(0, deadline.timeIntervalSinceNow)))
            await self?.expire(id)
        }
        let notify = self.notify
        Task { await notify(review) }
    }

    /// Waits for the review's end: approval, or a refusal (denied, expired, abandoned).
    public func wait(_ id: String) async -> ReviewOutcome {
        if let outcome = outcome(id) { return outcome }
        return await withCheckedContinuation { continuation in
            waiters[id, default: []].append(continuation)
        }
    }

    private func outcome(_ id: String) -> ReviewOutcome? {
        guard let review = active[id] ?? (try? store.review(id)) ?? nil else { return nil }
        switch review.state {
        case .pending: return nil
        case .approved, .granted: return .approved(review)
        case .denied, .expired, .abandoned, .executed: return .refused(review)
        }
    }

    /// Claims an approved review for its one run, recorded before the operation is sent: false
    /// when it was abandoned in the meantime (the client left, the gateway is stopping), and then
    /// the operation must not run.
    public func executed(_ id: String, client: ClientInfo) async -> Bool {
        guard var review = active[id], review.state == .approved else { return false }
        review.state = .executed
        review.closedAt = Date()
        active[id] = nil
        try? store.save(review)
        let names = review.approvals.map(\.subject).joined(separator: ", ")
        try? await record(stepRecord(review, step: "executed", actor: review.requester, client: client,
                                     decision: .allow(rule: "review:\(id)", reason: "approved by \(names); the operation was sent")))
        return true
    }

    /// The client left, cancelled, or the gateway stops: the operation will never run.
    public func abandon(_ id: String, reason: String) async {
        guard var review = active[id], review.state == .pending || review.state == .approved else { return }
        review.state = .abandoned
        await close(&review, by: nil, reason: reason, step: "abandoned", decision: .deny(rule: "review:\(id)", reason: reason))
    }

    private func expire(_ id: String) async {
        guard var review = active[id], review.state == .pending else { return }
        let reason = "no decision within \(Self.describe(settings.timeout))"
        review.state = .expired
        await close(&review, by: nil, reason: reason, step: "expired", decision: .deny(rule: "review:\(id)", reason: reason))
    }

    private func close(_ review: inout Review, by actor: Principal?, client: ClientInfo = ClientInfo(), reason: String, step: String, decision: Decision) async {
        review.closedAt = Date()
        review.closeReason = reason
        review.closedBy = actor?.subject
        active[review.id] = nil
        try? store.save(review)
        do {
            try await record(stepRecord(review, step: step, actor: actor ?? review.requester, client: client, decision: decision))
        } catch {
            logger.error("a review step could not be recorded", metadata: ["review": "\(review.id)", "step": "\(step)"])
        }
        resume(review.id, with: .refused(review))
    }

    private func resume(_ id: String, with outcome: ReviewOutcome) {
        for waiter in waiters.removeValue(forKey: id) ?? [] { waiter.resume(returning: outcome) }
    }

    // MARK: Deciding

    /// One approval. The review runs once it has as many as it needs; an approval that cannot be
    /// recorded is not taken.
    public func approve(_ id: String, by approver: Principal, client: ClientInfo, comment: String?, digest: String?) async throws -> Review {
        var review = try pending(id)
        if let refusal = ReviewEligibility.refusal(for: approver, on: review) { throw refusal }
        if review.approvals.contains(where: { $0.subject == approver.subject && $0.issuer == approver.issuer }) {
            throw ReviewRefusal(.alreadyApproved, "\(approver.subject) has already approved review \(id); it needs another approver")
        }
        if let digest, digest.lowercased() != review.digest {
            throw ReviewRefusal(.digestMismatch, "review \(id) is for another operation than the one approved (digest mismatch)")
        }
        guard !stopping else { throw ReviewRefusal(.closed, "the gateway is stopping") }
        if review.approvals.contains(where: { ReviewEligibility.samePerson($0.principal, approver) }) {
            throw ReviewRefusal(.alreadyApproved, "\(approver.subject) has already approved review \(id); it needs another approver")
        }
        let approval = Review.Approval(subject: approver.subject, issuer: approver.issuer, email: approver.email, time: Date(), comment: comment)
        let count = "\(review.approvals.count + 1) of \(review.approvalsRequired)"
        do {
            try await record(stepRecord(review, step: "approved", actor: approver, client: client,
                                        decision: .allow(rule: "review:\(id)", reason: "approved by \(approver.subject) (\(count))" + (comment.map { ": \($0)" } ?? ""))))
        } catch {
            throw ReviewRefusal(.auditUnavailable, "the approval could not be recorded, so it was not taken")
        }
        // Others may have decided while the approval was being recorded: add it to the review as
        // it is now, not to the copy read before.
        guard let current = active[id], current.state == .pending else { throw ReviewRefusal(.closed, "review \(id) closed while the approval was recorded") }
        review = current
        guard !review.approvals.contains(where: { ReviewEligibility.samePerson($0.principal, approver) }) else {
            throw ReviewRefusal(.alreadyApproved, "\(approver.subject) has already approved review \(id)")
        }
        review.approvals.append(approval)
        let complete = review.approvals.count >= review.approvalsRequired
        if complete {
            if review.kind == .access {
                return try await grant(review, client: client)
            }
            review.state = .approved
        }
        active[id] = review
        try? store.save(review)
        if complete { resume(id, with: .approved(review)) }
        return review
    }

    private func grant(_ reviewed: Review, client: ClientInfo) async throws -> Review {
        var review = reviewed
        let minutes = review.grantMinutes ?? 0
        let grant = AccessGrant(
            review: review.id, issuer: review.requester.issuer, subject: review.requester.subject, connection: review.connection,
            includesAgents: review.grantIncludesAgents ?? false, grantedBy: review.approvals.map(\.subject),
            expiresAt: Date().addingTimeInterval(TimeInterval(minutes * 60)))
        review.state = .granted
        review.closedAt = Date()
        active[review.id] = nil
        try? store.save(grant)
        grants.add(grant)
        try? store.save(review)
        try? await record(stepRecord(review, step: "granted", actor: review.requester, client: client, decision: grant.decision))
        resume(review.id, with: .approved(review))
        return review
    }

    /// A denial, with the reason the client is told. The requester may withdraw their own request.
    public func deny(_ id: String, by approver: Principal, client: ClientInfo, reason: String?) async throws -> Review {
        var review = try pending(id)
        let own = approver.issuer == review.requester.issuer && approver.subject == review.requester.subject && approver.agent == nil
        if !own, let refusal = ReviewEligibility.refusal(for: approver, on: review) { throw refusal }
        let why = (reason?.isEmpty == false ? reason! : "no reason given")
        let text = own ? "withdrawn by \(approver.subject): \(why)" : "denied by \(approver.subject): \(why)"
        do {
            try await record(stepRecord(review, step: "denied", actor: approver, client: client, decision: .deny(rule: "review:\(id)", reason: text)))
        } catch {
            throw ReviewRefusal(.auditUnavailable, "the denial could not be recorded, so it was not taken")
        }
        guard let current = active[id], current.state == .pending else { throw ReviewRefusal(.closed, "review \(id) closed while the denial was recorded") }
        review = current
        review.state = .denied
        review.closedAt = Date()
        review.closedBy = approver.subject
        review.closeReason = text
        active[id] = nil
        try? store.save(review)
        resume(id, with: .refused(review))
        return review
    }

    private func pending(_ id: String) throws -> Review {
        if let review = active[id] {
            guard review.state == .pending else { throw ReviewRefusal(.closed, "review \(id) is already \(review.state.rawValue)") }
            return review
        }
        guard let review = (try? store.review(id)) ?? nil else { throw ReviewRefusal(.notFound, "no review \(id)") }
        throw ReviewRefusal(.closed, "review \(id) is already \(review.state.rawValue)")
    }

    /// Ends a grant before its time. Approvers do this; it is recorded like every step.
    public func revokeGrant(_ id: String, by approver: Principal, client: ClientInfo, reason: String?) async throws -> AccessGrant {
        guard approver.agent == nil, approver.authMethod == .oidc, approver.groups.contains(where: settings.approverGroups.contains) else {
            throw ReviewRefusal(.notApprover, "only approvers (people in \(settings.approverGroups.sorted().joined(separator: ", "))) revoke grants")
        }
        guard let grant = grants.revoke(id) else { throw ReviewRefusal(.notFound, "no grant by review \(id) is in force") }
        try? store.deleteGrant(id)
        if var review = review(id) {
            let why = "revoked by \(approver.subject)" + (reason.map { ": \($0)" } ?? "")
            review.closeReason = why
            try? store.save(review)
            try? await record(stepRecord(review, step: "revoked", actor: approver, client: client, decision: .deny(rule: "grant:\(id)", reason: why)))
        }
        return grant
    }

    // MARK: Reading

    public func review(_ id: String) -> Review? {
        active[id] ?? (try? store.review(id)) ?? nil
    }

    public func reviews(state: Review.State?, limit: Int = 200) -> [Review] {
        (try? store.reviews(state: state, limit: limit)) ?? []
    }

    /// The reviews of one session still waiting for a decision, from memory (no store read).
    public func pending(session: String) -> [Review] {
        active.values.filter { $0.session == session && $0.state == .pending }.sorted { $0.createdAt < $1.createdAt }
    }

    // MARK: Records

    private func stepRecord(_ review: Review, step: String, actor: Principal, client: ClientInfo, decision: Decision) -> AuditRecord {
        var text = "review \(review.id) \(step): \(review.operation)"
        if text.utf8.count > 8192 { text = text.truncated(toUTF8Bytes: 8192).text }
        return AuditRecord(
            node: settings.node, session: review.session, principal: actor, client: client, connection: review.connection,
            operation: .init(kind: "review.\(step)", text: text, intent: review.intent),
            decision: decision,
            outcome: .init(status: review.state.rawValue),
            payload: "digest \(review.digest)")
    }

    static func newID() -> String {
        let alphabet = Array("abcdefghjkmnpqrstuvwxyz23456789")
        return "r" + String((0..<10).map { _ in alphabet.randomElement()! })
    }

    static func seconds(_ duration: Duration) -> TimeInterval {
        TimeInterval(duration.components.seconds) + TimeInterval(duration.components.attoseconds) / 1e18
    }

    static func describe(_ duration: Duration) -> String {
        let seconds = Int(Self.seconds(duration))
        return seconds % 60 == 0 && seconds >= 60 ? "\(seconds / 60) minutes" : "\(seconds) seconds"
    }
}
