import Foundation
import GatehouseCore
import Logging
import NIOConcurrencyHelpers
import Testing

@testable import Reviews

/// The approval lifecycle as a session and its reviewers see it, and what lands in the trail.
@Suite("Review board")
struct ReviewBoardTests {
    static let alice = Principal(subject: "alice", groups: ["dev"], issuer: "idp", authMethod: .oidc)
    static let aliceAgent = Principal(subject: "alice", groups: ["dev"], issuer: "idp", authMethod: .oidc, actors: [Actor(subject: "claude-code")])
    static let bob = Principal(subject: "bob", groups: ["dba"], issuer: "idp", authMethod: .oidc)
    static let carol = Principal(subject: "carol", groups: ["dba", "security"], issuer: "idp", authMethod: .oidc)
    static let aliceApprover = Principal(subject: "alice", groups: ["dba"], issuer: "idp", authMethod: .oidc)

    /// Every record the board wrote, in order.
    final class Trail: Sendable {
        let records = NIOLockedValueBox<[AuditRecord]>([])
        let failing = NIOLockedValueBox(false)
        var kinds: [String] { records.withLockedValue { $0.map(\.operation.kind) } }
        var recorder: ReviewBoard.Recorder {
            { record in
                if self.failing.withLockedValue({ $0 }) { throw CancellationError() }
                self.records.withLockedValue { $0.append(record) }
            }
        }
    }

    static func board(_ trail: Trail, path: String = temporaryPath(), timeout: Duration = .seconds(60)) throws -> ReviewBoard {
        ReviewBoard(
            store: try ReviewStore(path: path), settings: ReviewSettings(approverGroups: ["dba"], timeout: timeout),
            logger: Logger(label: "test"), record: trail.recorder)
    }

    static func temporaryPath() -> String {
        NSTemporaryDirectory() + "reviews-\(UUID().uuidString).sqlite"
    }

    static func request(_ principal: Principal = aliceAgent, sql: String = "DELETE FROM orders WHERE id = 7", approvals: Int = 1, groups: [[String]] = []) -> ReviewRequest {
        ReviewRequest(
            session: "s1", connection: "prod", protocolName: "postgres", operation: sql, intent: "clean up",
            digest: ReviewDigest.of(protocolName: "postgres", connection: "prod", principal: principal, operation: sql),
            requester: principal, client: ClientInfo(), decision: Decision(effect: .review, rule: "deletes", reason: "deletes need approval"),
            approvals: approvals, approverGroups: groups)
    }

    @Test func anApprovalReleasesTheHeldOperationAndEveryStepIsRecorded() async throws {
        let trail = Trail()
        let board = try Self.board(trail)
        let review = try await board.open(Self.request())
        async let outcome = board.wait(review.id)
        _ = try await board.approve(review.id, by: Self.bob, client: ClientInfo(), comment: "ok", digest: review.digest)
        guard case .approved(let approved) = await outcome else { Issue.record("not approved"); return }
        #expect(approved.approvals.map(\.subject) == ["bob"])
        #expect(await board.executed(review.id, client: ClientInfo()))
        #expect(trail.kinds == ["review.requested", "review.approved", "review.executed"])
        let approval = trail.records.withLockedValue { $0[1] }
        #expect(approval.principal?.subject == "bob")
        #expect(approval.session == "s1")
        #expect(await board.review(review.id)?.state == .executed)
        // Used once: it cannot be approved again, nor run again.
        await #expect(throws: ReviewRefusal.self) {
            try await board.approve(review.id, by: Self.carol, client: ClientInfo(), comment: nil, digest: nil)
        }
    }

    @Test func theRequesterCannotApproveTheirOwnRequestEvenWithApproverGroups() async throws {
        let board = try Self.board(Trail())
        let review = try await board.open(Self.request(Self.aliceAgent))
        await #expect(throws: ReviewRefusal(.ownRequest, "alice requested review \(review.id) and cannot decide it")) {
            try await board.approve(review.id, by: Self.aliceApprover, client: ClientInfo(), comment: nil, digest: nil)
        }
        #expect(await board.review(review.id)?.state == .pending)
    }

    @Test func agentsAndPeopleOutsideTheApproverGroupsCannotApprove() async throws {
        let board = try Self.board(Trail())
        let review = try await board.open(Self.request(Self.alice))
        let bobsAgent = Principal(subject: "bob", groups: ["dba"], issuer: "idp", authMethod: .oidc, actors: [Actor(subject: "bot")])
        let dave = Principal(subject: "dave", groups: ["dev"], issuer: "idp", authMethod: .oidc)
        for reviewer in [bobsAgent, dave] {
            await #expect(throws: ReviewRefusal.self) {
                try await board.approve(review.id, by: reviewer, client: ClientInfo(), comment: nil, digest: nil)
            }
        }
        #expect(await board.review(review.id)?.approvals.isEmpty == true)
    }

    @Test func aServiceKeyOrTheSamePersonAtAnotherIssuerCannotApprove() async throws {
        let board = try Self.board(Trail())
        let requester = Principal(subject: "alice", email: "alice@example.com", groups: ["dev"], issuer: "idp", authMethod: .oidc)
        let review = try await board.open(Self.request(requester))
        let key = Principal(subject: "ci-bot", groups: ["dba"], issuer: "gatehouse:api-key", authMethod: .apiKey)
        let aliceElsewhere = Principal(subject: "a.smith", email: "Alice@Example.com", groups: ["dba"], issuer: "other-idp", authMethod: .oidc)
        for approver in [key, aliceElsewhere] {
            await #expect(throws: ReviewRefusal.self) {
                try await board.approve(review.id, by: approver, client: ClientInfo(), comment: nil, digest: nil)
            }
        }
        // One person with two accounts counts once toward two approvals.
        let twice = try await board.open(Self.request(approvals: 2))
        let bobElsewhere = Principal(subject: "robert", email: "bob@example.com", groups: ["dba"], issuer: "other-idp", authMethod: .oidc)
        let bobHere = Principal(subject: "bob", email: "bob@example.com", groups: ["dba"], issuer: "idp", authMethod: .oidc)
        _ = try await board.approve(twice.id, by: bobHere, client: ClientInfo(), comment: nil, digest: nil)
        await #expect(throws: ReviewRefusal.self) {
            try await board.approve(twice.id, by: bobElsewhere, client: ClientInfo(), comment: nil, digest: nil)
        }
    }

    @Test func concurrentApprovalsAreAllKept() async throws {
        let board = try Self.board(Trail())
        let review = try await board.open(Self.request(approvals: 3))
        let approvers = ["bob", "carol", "dora"].map { Principal(subject: $0, groups: ["dba"], issuer: "idp", authMethod: .oidc) }
        await withTaskGroup(of: Void.self) { group in
            for approver in approvers {
                group.addTask { _ = try? await board.approve(review.id, by: approver, client: ClientInfo(), comment: nil, digest: nil) }
            }
        }
        guard case .approved(let approved) = await board.wait(review.id) else { Issue.record("not approved"); return }
        #expect(Set(approved.approvals.map(\.subject)) == ["bob", "carol", "dora"])
    }

    @Test func anApprovedReviewAbandonedBeforeItsRunCannotBeClaimed() async throws {
        let board = try Self.board(Trail())
        let review = try await board.open(Self.request())
        _ = try await board.approve(review.id, by: Self.bob, client: ClientInfo(), comment: nil, digest: nil)
        await board.abandon(review.id, reason: "the client disconnected")
        #expect(await board.executed(review.id, client: ClientInfo()) == false)
        let other = try await board.open(Self.request(sql: "DELETE FROM orders WHERE id = 9"))
        _ = try await board.approve(other.id, by: Self.bob, client: ClientInfo(), comment: nil, digest: nil)
        #expect(await board.executed(other.id, client: ClientInfo()))
        #expect(await board.executed(other.id, client: ClientInfo()) == false, "one run only")
    }

    @Test func aRuleAskingForTwoApprovalsRunsOnlyAfterTheSecondFromAnotherPerson() async throws {
        let board = try Self.board(Trail())
        let review = try await board.open(Self.request(approvals: 2))
        _ = try await board.approve(review.id, by: Self.bob, client: ClientInfo(), comment: nil, digest: nil)
        #expect(await board.review(review.id)?.state == .pending)
        await #expect(throws: ReviewRefusal.self) {
            try await board.approve(review.id, by: Self.bob, client: ClientInfo(), comment: nil, digest: nil)
        }
        _ = try await board.approve(review.id, by: Self.carol, client: ClientInfo(), comment: nil, digest: nil)
        guard case .approved(let approved) = await board.wait(review.id) else { Issue.record("not approved"); return }
        #expect(approved.approvals.map(\.subject) == ["bob", "carol"])
    }

    @Test func aRulesOwnApproverGroupsNarrowWhoMayApprove() async throws {
        let board = try Self.board(Trail())
        let review = try await board.open(Self.request(groups: [["security"]]))
        await #expect(throws: ReviewRefusal.self) {
            try await board.approve(review.id, by: Self.bob, client: ClientInfo(), comment: nil, digest: nil)
        }
        _ = try await board.approve(review.id, by: Self.carol, client: ClientInfo(), comment: nil, digest: nil)
        #expect(await board.review(review.id)?.state == .approved)
    }

    @Test func anApprovalForAnotherOperationsDigestIsRefused() async throws {
        let board = try Self.board(Trail())
        let review = try await board.open(Self.request())
        let other = ReviewDigest.of(protocolName: "postgres", connection: "prod", principal: Self.aliceAgent, operation: "DELETE FROM orders")
        await #expect(throws: ReviewRefusal.self) {
            try await board.approve(review.id, by: Self.bob, client: ClientInfo(), comment: nil, digest: other)
        }
    }

    @Test func aDenialCarriesTheReviewersReason() async throws {
        let trail = Trail()
        let board = try Self.board(trail)
        let review = try await board.open(Self.request())
        _ = try await board.deny(review.id, by: Self.bob, client: ClientInfo(), reason: "use the archive job")
        guard case .refused(let denied) = await board.wait(review.id) else { Issue.record("not refused"); return }
        #expect(denied.state == .denied)
        #expect(denied.closeReason == "denied by bob: use the archive job")
        #expect(trail.kinds == ["review.requested", "review.denied"])
    }

    @Test func withoutADecisionTheReviewExpires() async throws {
        let trail = Trail()
        let board = try Self.board(trail, timeout: .milliseconds(200))
        let review = try await board.open(Self.request())
        guard case .refused(let expired) = await board.wait(review.id) else { Issue.record("not refused"); return }
        #expect(expired.state == .expired)
        #expect(trail.kinds == ["review.requested", "review.expired"])
    }

    @Test func anAbandonedReviewCanNoLongerBeApproved() async throws {
        let board = try Self.board(Trail())
        let review = try await board.open(Self.request())
        await board.abandon(review.id, reason: "the client disconnected")
        await #expect(throws: ReviewRefusal.self) {
            try await board.approve(review.id, by: Self.bob, client: ClientInfo(), comment: nil, digest: nil)
        }
        #expect(await board.review(review.id)?.state == .abandoned)
    }

    @Test func aRestartedGatewayClosesWhatTheLastOneLeftOpen() async throws {
        let path = Self.temporaryPath()
        let first = try Self.board(Trail(), path: path)
        let pending = try await first.open(Self.request())
        let approved = try await first.open(Self.request(sql: "DELETE FROM orders WHERE id = 8"))
        _ = try await first.approve(approved.id, by: Self.bob, client: ClientInfo(), comment: nil, digest: nil)

        let trail = Trail()
        let second = try Self.board(trail, path: path)
        await second.closeLeftovers()
        #expect(await second.review(pending.id)?.state == .abandoned)
        #expect(await second.review(approved.id)?.state == .abandoned)
        #expect(trail.kinds == ["review.abandoned", "review.abandoned"])
    }

    @Test func aReviewThatCannotBeRecordedIsNotOpened() async throws {
        let trail = Trail()
        trail.failing.withLockedValue { $0 = true }
        let board = try Self.board(trail)
        await #expect(throws: ReviewRefusal.self) { try await board.open(Self.request()) }
        #expect(await board.reviews(state: .pending).isEmpty)
    }

    @Test func anAccessGrantLetsThePersonInUntilItEnds() async throws {
        let board = try Self.board(Trail())
        let review = try await board.requestAccess(
            connection: "prod", minutes: 30, includeAgents: false, reason: "incident 42", requester: Self.alice, client: ClientInfo())
        #expect(board.grants.grant(for: Self.alice, connection: "prod") == nil)
        let granted = try await board.approve(review.id, by: Self.bob, client: ClientInfo(), comment: nil, digest: nil)
        #expect(granted.state == .granted)
        let grant = try #require(board.grants.grant(for: Self.alice, connection: "prod"))
        #expect(grant.grantedBy == ["bob"])
        #expect(grant.expiresAt.timeIntervalSinceNow > 29 * 60)
        #expect(board.grants.grant(for: Self.alice, connection: "other") == nil)
        #expect(board.grants.grant(for: Self.aliceAgent, connection: "prod") == nil)
        #expect(board.grants.grant(for: Self.alice, connection: "prod", now: Date().addingTimeInterval(31 * 60)) == nil)
        // Agents cannot ask for access.
        await #expect(throws: ReviewRefusal.self) {
            try await board.requestAccess(connection: "prod", minutes: 5, includeAgents: false, reason: nil, requester: Self.aliceAgent, client: ClientInfo())
        }
    }
}

@Suite("Review digest")
struct ReviewDigestTests {
    static let alice = Principal(subject: "alice", groups: [], issuer: "idp", authMethod: .oidc)

    @Test func everyPartOfTheOperationAndItsContextChangesTheDigest() {
        let base = ReviewDigest.of(protocolName: "postgres", connection: "prod", principal: Self.alice, operation: "DELETE FROM t WHERE id = $1", parameters: ["1"])
        let variants = [
            ReviewDigest.of(protocolName: "postgres", connection: "prod", principal: Self.alice, operation: "DELETE FROM t WHERE id = $1", parameters: ["2"]),
            ReviewDigest.of(protocolName: "postgres", connection: "prod", principal: Self.alice, operation: "DELETE FROM t WHERE id = $1", parameters: [nil]),
            ReviewDigest.of(protocolName: "postgres", connection: "prod", principal: Self.alice, operation: "DELETE FROM t WHERE id = $1", parameters: [""]),
            ReviewDigest.of(protocolName: "postgres", connection: "prod", principal: Self.alice, operation: "DELETE FROM t WHERE id = $1"),
            ReviewDigest.of(protocolName: "postgres", connection: "staging", principal: Self.alice, operation: "DELETE FROM t WHERE id = $1", parameters: ["1"]),
            ReviewDigest.of(protocolName: "postgres", connection: "prod", principal: Principal(subject: "bob", groups: [], issuer: "idp", authMethod: .oidc),
                            operation: "DELETE FROM t WHERE id = $1", parameters: ["1"]),
            ReviewDigest.of(protocolName: "postgres", connection: "prod", principal: Principal(subject: "alice", groups: [], issuer: "idp", authMethod: .oidc, actors: [Actor(subject: "a")]),
                            operation: "DELETE FROM t WHERE id = $1", parameters: ["1"]),
            ReviewDigest.of(protocolName: "http", connection: "prod", principal: Self.alice, operation: "DELETE FROM t WHERE id = $1", parameters: ["1"]),
        ]
        #expect(Set(variants + [base]).count == variants.count + 1)
        #expect(base == ReviewDigest.of(protocolName: "postgres", connection: "prod", principal: Self.alice, operation: "DELETE FROM t WHERE id = $1", parameters: ["1"]))
        #expect(base.count == 64)
    }
}
