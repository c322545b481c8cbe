@testable import HTTPGateway
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

/// Requests watch their client through the connection's HangupWatcher; a kept-alive connection
/// carries many requests, and each must stop watching when it is done.
@Suite("Hangup watcher")
struct HangupWatcherTests {
    @Test func finishedRequestsStopWatchingAndOnlyOpenOnesHearTheHangup() throws {
        let watcher = HangupWatcher()
        let channel = EmbeddedChannel(handler: watcher)
        let heard = NIOLockedValueBox<[Int]>([])
        for request in 0..<1000 {
            HangupObservation.start(on: channel) { heard.withLockedValue { $0.append(request) } }.end()
        }
        let open = HangupObservation.start(on: channel) { heard.withLockedValue { $0.append(-1) } }
        channel.embeddedEventLoop.run()
        #expect(watcher.observerCount == 1)

        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(heard.withLockedValue { $0 } == [-1])
        open.end()
        channel.embeddedEventLoop.run()
        #expect(watcher.observerCount == 0)
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test func aRequestThatStartsWatchingAfterTheHangupHearsItAtOnce() throws {
        let watcher = HangupWatcher()
        let channel = EmbeddedChannel(handler: watcher)
        try channel.close().wait()
        let heard = NIOLockedValueBox(false)
        let observation = HangupObservation.start(on: channel) { heard.withLockedValue { $0 = true } }
        channel.embeddedEventLoop.run()
        #expect(heard.withLockedValue { $0 })
        observation.end()
    }
}
