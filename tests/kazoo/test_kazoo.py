"""kazoo (unmodified, from PyPI) against a ZooKeeper-protocol server at $ZK_HOSTS.

The same file runs against a real Apache ZooKeeper 3.8 and against FaaSKeeper's gateway
(tests/kazoo.rs runs both), so every assertion here is known to be ZooKeeper's behaviour.
Run by hand: ZK_HOSTS=127.0.0.1:2181 python3 -m unittest -v tests/kazoo/test_kazoo.py
"""

import os
import threading
import time
import unittest
import uuid

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from kazoo.protocol.states import EventType
from kazoo.recipe.cache import TreeCache, TreeEvent

HOSTS = os.environ.get("ZK_HOSTS", "127.0.0.1:2181")
WAIT = 15.0


def client():
    c = KazooClient(hosts=HOSTS, timeout=10.0)
    c.start(timeout=15.0)
    return c


class KazooTestCase(unittest.TestCase):
    def setUp(self):
        self.root = "/kazoo-" + uuid.uuid4().hex[:10]
        self.clients = []
        self.zk = self.new_client()
        self.zk.create(self.root)

    def new_client(self):
        c = client()
        self.clients.append(c)
        return c

    def tearDown(self):
        try:
            self.zk.delete(self.root, recursive=True)
        except Exception:
            pass
        for c in self.clients:
            try:
                c.stop()
                c.close()
            except Exception:
                pass

    def p(self, *parts):
        return "/".join([self.root] + list(parts))


class CrudTest(KazooTestCase):
    def test_create_get_set_delete(self):
        path = self.p("a")
        self.assertEqual(self.zk.create(path, b"hello"), path)
        data, stat = self.zk.get(path)
        self.assertEqual(data, b"hello")
        self.assertEqual(stat.version, 0)
        self.assertEqual(stat.dataLength, 5)
        stat = self.zk.set(path, b"x", version=0)
        self.assertEqual(stat.version, 1)
        with self.assertRaises(BadVersionError):
            self.zk.set(path, b"y", version=0)
        with self.assertRaises(NodeExistsError):
            self.zk.create(path)
        with self.assertRaises(NoNodeError):
            self.zk.create(self.p("none", "child"))
        self.zk.create(self.p("a", "kid"))
        with self.assertRaises(NotEmptyError):
            self.zk.delete(path)
        self.assertEqual(self.zk.get_children(path), ["kid"])
        children, stat = self.zk.get_children(path, include_data=True)
        self.assertEqual(stat.numChildren, 1)
        self.zk.delete(path, recursive=True)
        self.assertIsNone(self.zk.exists(path))

    def test_ephemeral_and_sequential(self):
        other = self.new_client()
        e = other.create(self.p("eph"), ephemeral=True)
        with self.assertRaises(NoChildrenForEphemeralsError):
            self.zk.create(self.p("eph", "x"))
        s1 = self.zk.create(self.p("s-"), sequence=True)
        s2 = self.zk.create(self.p("s-"), sequence=True)
        self.assertEqual(s1, self.p("s-0000000001"))
        self.assertEqual(s2, self.p("s-0000000002"))
        self.assertEqual(self.zk.exists(e).ephemeralOwner, other.client_id[0])
        other.stop()
        other.close()
        self.assertIsNone(self.zk.exists(e))

    def test_ensure_path_and_acl(self):
        self.zk.ensure_path(self.p("x", "y", "z"))
        self.assertIsNotNone(self.zk.exists(self.p("x", "y", "z")))
        acl, stat = self.zk.get_acls(self.p("x"))
        self.assertEqual(len(acl), 1)
        self.assertEqual(acl[0].perms, 31)
        self.assertEqual(acl[0].id.scheme, "world")
        self.zk.sync(self.p("x"))


class TransactionTest(KazooTestCase):
    def test_transaction_is_all_or_nothing(self):
        t = self.zk.transaction()
        t.create(self.p("t1"), b"a")
        t.create(self.p("t2"), b"b")
        t.set_data(self.p("t1"), b"c")
        t.check(self.p("t2"), 0)
        results = t.commit()
        self.assertEqual(results[:2], [self.p("t1"), self.p("t2")])
        self.assertEqual(results[2].version, 1)
        self.assertEqual(results[3], True)
        t = self.zk.transaction()
        t.delete(self.p("t2"))
        t.check(self.p("t1"), 5)
        t.create(self.p("t3"))
        results = t.commit()
        self.assertEqual(
            [type(r).__name__ for r in results],
            ["RolledBackError", "BadVersionError", "RuntimeInconsistency"],
        )
        self.assertIsNotNone(self.zk.exists(self.p("t2")))
        self.assertIsNone(self.zk.exists(self.p("t3")))


class WatchTest(KazooTestCase):
    def test_data_and_child_watches_fire_once(self):
        path = self.p("w")
        events = []
        done = threading.Event()

        def on_data(event):
            events.append((event.type, event.path))
            done.set()

        self.assertIsNone(self.zk.exists(path, watch=on_data))
        writer = self.new_client()
        writer.create(path, b"1")
        self.assertTrue(done.wait(WAIT))
        self.assertEqual(events, [(EventType.CREATED, path)])
        done.clear()
        self.zk.get(path, watch=on_data)
        writer.set(path, b"2")
        self.assertTrue(done.wait(WAIT))
        writer.set(path, b"3")
        time.sleep(0.5)
        self.assertEqual(events[1:], [(EventType.CHANGED, path)])
        child_events = []
        got = threading.Event()
        self.zk.get_children(path, watch=lambda e: (child_events.append(e.type), got.set()))
        writer.create(self.p("w", "c"))
        self.assertTrue(got.wait(WAIT))
        self.assertEqual(child_events, [EventType.CHILD])

    def test_data_watch_recipe(self):
        path = self.p("dw")
        self.zk.create(path, b"0")
        seen = []
        changed = threading.Condition()

        @self.zk.DataWatch(path)
        def watcher(data, stat):
            with changed:
                seen.append(data)
                changed.notify_all()

        writer = self.new_client()
        for i in range(1, 4):
            writer.set(path, str(i).encode())
            with changed:
                changed.wait_for(lambda: seen and seen[-1] == str(i).encode(), WAIT)
        self.assertEqual(seen[-1], b"3")
        self.assertEqual(seen[0], b"0")


class RecipeTest(KazooTestCase):
    def test_lock_is_exclusive_and_fair(self):
        holders = []
        active = [0]
        max_active = [0]
        guard = threading.Lock()

        def worker(i):
            c = self.new_client()
            lock = c.Lock(self.p("lock"), "w%d" % i)
            for _ in range(3):
                with lock:
                    with guard:
                        active[0] += 1
                        max_active[0] = max(max_active[0], active[0])
                        holders.append(i)
                    time.sleep(0.01)
                    with guard:
                        active[0] -= 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(max_active[0], 1)
        self.assertEqual(sorted(holders), sorted([i for i in range(4) for _ in range(3)]))

    def test_election(self):
        leaders = []
        elected = threading.Event()
        release = threading.Event()

        def lead(name):
            leaders.append(name)
            elected.set()
            release.wait(WAIT)

        a = self.new_client().Election(self.p("election"), "a")
        b = self.new_client().Election(self.p("election"), "b")
        ta = threading.Thread(target=a.run, args=(lead, "a"))
        ta.start()
        self.assertTrue(elected.wait(WAIT))
        elected.clear()
        tb = threading.Thread(target=b.run, args=(lead, "b"))
        tb.start()
        time.sleep(0.5)
        self.assertEqual(leaders, ["a"])
        self.assertEqual(len(a.contenders()), 2)
        release.set()
        ta.join(WAIT)
        self.assertTrue(elected.wait(WAIT))
        tb.join(WAIT)
        self.assertEqual(leaders, ["a", "b"])

    def test_barrier(self):
        barrier = self.zk.Barrier(self.p("barrier"))
        barrier.create()
        passed = threading.Event()

        def waiter():
            if self.new_client().Barrier(self.p("barrier")).wait(WAIT):
                passed.set()

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.5)
        self.assertFalse(passed.is_set())
        barrier.remove()
        t.join(WAIT)
        self.assertTrue(passed.is_set())

    def test_counter(self):
        def bump():
            counter = self.new_client().Counter(self.p("counter"))
            for _ in range(10):
                counter += 1

        threads = [threading.Thread(target=bump) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(self.zk.Counter(self.p("counter")).value, 30)

    def test_queue(self):
        q = self.zk.Queue(self.p("queue"))
        for item in [b"one", b"two", b"three"]:
            q.put(item)
        self.assertEqual(len(q), 3)
        consumer = self.new_client().Queue(self.p("queue"))
        self.assertEqual([consumer.get(), consumer.get(), consumer.get()], [b"one", b"two", b"three"])
        self.assertIsNone(consumer.get())

    def test_party(self):
        members = []
        for name in ["a", "b", "c"]:
            party = self.new_client().Party(self.p("party"), name)
            party.join()
            members.append(party)
        self.assertEqual(sorted(self.zk.Party(self.p("party"))), ["a", "b", "c"])
        members[1].leave()
        self.assertEqual(sorted(self.zk.Party(self.p("party"))), ["a", "c"])

    def test_tree_cache(self):
        self.zk.create(self.p("tree", "x"), b"1", makepath=True)
        events = []
        cond = threading.Condition()
        cache = TreeCache(self.zk, self.p("tree"))

        def listener(event):
            with cond:
                events.append(event)
                cond.notify_all()

        cache.listen(listener)
        cache.start()
        with cond:
            self.assertTrue(cond.wait_for(lambda: any(e.event_type == TreeEvent.INITIALIZED for e in events), WAIT))
        self.assertEqual(cache.get_data(self.p("tree", "x")).data, b"1")
        writer = self.new_client()
        writer.create(self.p("tree", "y"), b"2")
        writer.set(self.p("tree", "x"), b"3")
        with cond:
            cond.wait_for(
                lambda: cache.get_data(self.p("tree", "y")) is not None
                and cache.get_data(self.p("tree", "x")).data == b"3",
                WAIT,
            )
        self.assertEqual(sorted(cache.get_children(self.p("tree"))), ["x", "y"])
        self.assertEqual(cache.get_data(self.p("tree", "x")).data, b"3")
        cache.close()


if __name__ == "__main__":
    unittest.main()
