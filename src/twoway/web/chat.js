// twoway web chat: one WebSocket to the page's own host; one text message out per line
// typed, and each message in holds one or more lines separated by "\n".
// Every piece of text from the server goes into the page with textContent, never as
// HTML: what another user types can never become markup or script.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const log = $('log'), input = $('input'), form = $('send'), statusEl = $('status');
  const roomsEl = $('rooms'), membersEl = $('members'), completeEl = $('complete');
  const side = $('side'), toggle = $('toggle-side');

  // The commands the server knows (its /help), with their hints, for completion.
  const COMMANDS = [
    ['/nick', 'NAME', 'change your nick'],
    ['/join', 'ROOM', 'go to a room, creating it if needed'],
    ['/part', '', 'go back to the lobby'],
    ['/rooms', '', 'list the rooms'],
    ['/who', '', 'list the people in this room'],
    ['/msg', 'NICK text', 'send a private message'],
    ['/me', 'action', 'describe what you are doing'],
    ['/topic', '[text]', 'show, or set, the topic'],
    ['/peers', '', 'count the other people'],
    ['/help', '', 'the list of commands'],
    ['/quit', '[reason]', 'leave'],
  ];
  const NICK_LINE = /^([A-Za-z0-9_-]{1,32}): ([\s\S]*)$/;
  const MAX_LINES = 2000; // lines kept in the page

  const store = window.sessionStorage;
  let ws = null;
  let me = '';
  let room = '';
  let token = store.getItem('twoway.token') || '';
  let attempts = 0;
  let retryTimer = 0;
  let quitting = false;
  let everConnected = false;
  // Answers to the /who and /rooms the page sends by itself are read, not shown.
  let quietWho = 0, quietRooms = 0;
  let refreshTimer = 0;
  let resumeSent = false;
  let unread = 0;
  let unreadMarker = null;
  const sent = [];
  let sentIndex = 0;
  let choices = [], chosen = -1;

  // -- the connection ------------------------------------------------------------------

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
  }

  function connect() {
    retryTimer = 0;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    setStatus(everConnected ? 'reconnecting' : 'connecting',
      everConnected ? 'reconnecting…' : 'connecting…');
    try {
      ws = new WebSocket(`${scheme}//${location.host}/`);
    } catch (err) {
      scheduleReconnect();
      return;
    }
    ws.onopen = () => {
      attempts = 0;
      resumeSent = false;
      if (everConnected && token) {
        // First message of a reconnect: pick up where we left off.
        ws.send(`/resume ${token}`);
        resumeSent = true;
      } else if (everConnected) {
        restoreIdentity(); // no token (a server without resume): same nick, same room
      }
      everConnected = true;
      setStatus('connected', 'connected');
    };
    ws.onmessage = (event) => {
      if (typeof event.data !== 'string') return;
      for (const line of event.data.split('\n')) receive(line);
    };
    ws.onclose = (event) => {
      ws = null;
      if (quitting) {
        setStatus('closed', 'disconnected');
        addLine('*** disconnected: press Enter to connect again', 'notice');
        return;
      }
      if (event.reason) addLine(`*** connection closed: ${event.reason}`, 'notice');
      scheduleReconnect();
    };
    ws.onerror = () => {}; // onclose follows and says it
  }

  function scheduleReconnect() {
    if (retryTimer) return;
    setStatus('reconnecting', 'reconnecting…');
    // 0.5 s, 1 s, 2 s ... up to 10 s, with jitter so a restarted server is not stampeded.
    const delay = Math.min(10000, 500 * 2 ** attempts) * (0.75 + Math.random() / 2);
    attempts = Math.min(attempts + 1, 6);
    retryTimer = window.setTimeout(connect, delay);
  }

  function send(text) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(text);
    return true;
  }

  // -- what the server says ----------------------------------------------------------

  function receive(line) {
    let m;
    if ((m = /^\*\*\* resume token: (\S+)$/.exec(line))) {
      token = m[1];
      store.setItem('twoway.token', token);
      return; // a credential: not for the screen
    }
    if ((m = /^\*\*\* replayed (\d+) lines?; (\d+) missed/.exec(line))) {
      addLine(`*** ${m[1]} replayed, ${m[2]} missed while away`, 'notice replay');
      refreshSoon();
      return;
    }
    if (resumeSent && /^error: .*resume/i.test(line)) {
      // A server without resume (or a token it no longer knows): start over, same nick.
      resumeSent = false;
      token = '';
      store.removeItem('twoway.token');
      restoreIdentity();
      return;
    }
    if ((m = /^\*\*\* in (\S+): (.*)$/.exec(line))) {
      setMembers(m[2] === '' ? [] : m[2].split(', '));
      if (quietWho > 0) { quietWho--; return; }
    } else if ((m = /^\*\*\* rooms: (.*)$/.exec(line))) {
      setRooms(m[1]);
      if (quietRooms > 0) { quietRooms--; return; }
    } else if ((m = /^\*\*\* you are in (\S+)$/.exec(line))) {
      room = m[1];
      store.setItem('twoway.room', room);
      $('room-name').textContent = room;
      refreshSoon();
    } else if ((m = /^\*\*\* (?:you are|nick collision: you are now) ([A-Za-z0-9_-]+)$/.exec(line))) {
      setMe(m[1]);
    } else if ((m = /^\*\*\* (\S+) is now known as (\S+)$/.exec(line))) {
      if (m[1] === me) setMe(m[2], true);
      refreshSoon();
    } else if (/^\*\*\* (\S+) (joined|left) /.test(line) || /^\*\*\* \d+ peers? here: /.test(line)) {
      refreshSoon();
    }
    addLine(line);
  }

  function setMe(nick, chosenByUser) {
    me = nick;
    $('me').textContent = nick;
    if (chosenByUser || !/^guest\d+$/.test(nick)) store.setItem('twoway.nick', nick);
  }

  function restoreIdentity() {
    const nick = store.getItem('twoway.nick');
    const saved = store.getItem('twoway.room');
    if (nick && nick !== me) send(`/nick ${nick}`);
    if (saved && saved !== room) send(`/join ${saved}`);
  }

  // /who and /rooms are asked at most once per second, and only while connected.
  function refreshSoon() {
    if (refreshTimer) return;
    refreshTimer = window.setTimeout(() => {
      refreshTimer = 0;
      if (send('/who')) quietWho++;
      if (send('/rooms')) quietRooms++;
    }, 1000);
  }

  // -- the log -------------------------------------------------------------------------

  function hue(nick) {
    let h = 0;
    for (const ch of nick) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return h % 360;
  }

  function nickSpan(nick) {
    const span = document.createElement('span');
    span.className = 'nick';
    span.textContent = nick;
    span.style.color = `hsl(${hue(nick)} 65% 38%)`;
    return span;
  }

  function addLine(line, kind) {
    const row = document.createElement('div');
    row.className = 'line';
    let m;
    if (kind) {
      row.className += ` ${kind}`;
      row.textContent = line;
    } else if (line.startsWith('*** ')) {
      row.className += ' notice';
      row.textContent = line;
    } else if (line.startsWith('error: ')) {
      row.className += ' error';
      row.textContent = line;
    } else if (line.startsWith('[msg ')) {
      row.className += ' private';
      row.textContent = line;
    } else {
      let body = line;
      if (body.startsWith('[history] ')) {
        row.className += ' history';
        body = body.slice(10);
      }
      if ((m = NICK_LINE.exec(body))) {
        if (m[1] === me) row.className += ' mine';
        row.append(nickSpan(m[1]));
        const text = document.createElement('span');
        text.className = 'text';
        text.textContent = `: ${m[2]}`;
        row.append(text);
      } else if ((m = /^\* ([A-Za-z0-9_-]+) ([\s\S]*)$/.exec(body))) {
        row.className += ' action';
        row.append('* ', nickSpan(m[1]), ` ${m[2]}`);
      } else {
        row.textContent = body;
      }
    }
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    if (isAway()) markUnread();
    log.append(row);
    while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  // -- unread marker -------------------------------------------------------------------

  function isAway() {
    return document.hidden || !document.hasFocus();
  }

  function markUnread() {
    if (!unreadMarker) {
      unreadMarker = document.createElement('div');
      unreadMarker.className = 'unread';
      unreadMarker.textContent = 'new messages';
      log.append(unreadMarker);
    }
    unread++;
    document.title = `(${unread}) twoway chat`;
  }

  function seen() {
    unread = 0;
    document.title = 'twoway chat';
  }

  window.addEventListener('focus', () => {
    seen();
    // The marker stays where it is until the next time the page is left.
  });
  window.addEventListener('blur', () => {
    if (unreadMarker) { unreadMarker.remove(); unreadMarker = null; }
  });
  document.addEventListener('visibilitychange', () => { if (!document.hidden) seen(); });

  // -- rooms and people ----------------------------------------------------------------

  function listButton(label, title, onClick, current) {
    const li = document.createElement('li');
    if (current) li.className = 'current';
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = label;
    button.title = title;
    button.addEventListener('click', onClick);
    li.append(button);
    return li;
  }

  function setRooms(listing) {
    const items = [];
    for (const part of listing.split(', ')) {
      const m = /^(\S+) \((\d+)\)$/.exec(part);
      if (!m) continue;
      const name = m[1];
      items.push(listButton(`${name} (${m[2]})`, `join ${name}`, () => {
        if (name !== room) send(`/join ${name}`);
        input.focus();
      }, name === room));
    }
    roomsEl.replaceChildren(...items);
  }

  function setMembers(names) {
    const items = names.filter((n) => /^[A-Za-z0-9_-]+$/.test(n)).map((nick) => {
      const li = listButton(nick, `private message to ${nick}`, () => {
        input.value = `/msg ${nick} `;
        input.focus();
      }, nick === me);
      li.firstChild.style.color = `hsl(${hue(nick)} 65% 38%)`;
      return li;
    });
    membersEl.replaceChildren(...items);
  }

  toggle.addEventListener('click', () => {
    const open = side.classList.toggle('open');
    toggle.setAttribute('aria-expanded', String(open));
  });

  // -- typing: sending, history, completion --------------------------------------------

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value;
    if (!ws && quitting) {
      quitting = false;
      everConnected = false;
      connect();
      return;
    }
    if (!text) return;
    if (!send(text)) {
      addLine('*** not connected: the line was not sent', 'error');
      return;
    }
    if (/^(\/quit\b|quit$)/i.test(text)) quitting = true;
    // The server sends a message to everyone else in the room: show ours here.
    if (!text.startsWith('/') || text.startsWith('//')) {
      if (!/^quit$/i.test(text)) addLine(`${me}: ${text.replace(/^\/\//, '/')}`);
    } else if (/^\/me \S/i.test(text)) {
      addLine(`* ${me} ${text.slice(4)}`);
    }
    sent.push(text);
    if (sent.length > 100) sent.shift();
    sentIndex = sent.length;
    input.value = '';
    hideCompletion();
    if (/^\/(join|part|nick)\b/i.test(text)) refreshSoon();
  });

  function showCompletion() {
    const text = input.value;
    const m = /^(\/\S*)$/.exec(text);
    if (!m) { hideCompletion(); return; }
    const word = m[1].toLowerCase();
    choices = COMMANDS.filter(([name]) => name.startsWith(word));
    if (!choices.length || (choices.length === 1 && choices[0][0] === word)) {
      hideCompletion();
      return;
    }
    chosen = 0;
    completeEl.replaceChildren(...choices.map(([name, args, help], i) => {
      const li = document.createElement('li');
      li.setAttribute('role', 'option');
      li.textContent = args ? `${name} ${args}` : name;
      const hint = document.createElement('span');
      hint.className = 'hint';
      hint.textContent = help;
      li.append(hint);
      li.addEventListener('mousedown', (event) => {
        event.preventDefault();
        chosen = i;
        applyCompletion();
      });
      return li;
    }));
    completeEl.hidden = false;
    markChosen();
  }

  function markChosen() {
    [...completeEl.children].forEach((li, i) => li.setAttribute('aria-selected', String(i === chosen)));
  }

  function hideCompletion() {
    completeEl.hidden = true;
    choices = [];
    chosen = -1;
  }

  function applyCompletion() {
    if (chosen < 0 || !choices[chosen]) return;
    const [name, args] = choices[chosen];
    input.value = args ? `${name} ` : name;
    hideCompletion();
    input.focus();
  }

  input.addEventListener('input', showCompletion);
  input.addEventListener('keydown', (event) => {
    const open = !completeEl.hidden && choices.length > 0;
    if (event.key === 'Tab') {
      if (open) {
        event.preventDefault();
        applyCompletion();
      } else if (/^\/\S*$/.test(input.value)) {
        event.preventDefault();
        showCompletion();
        if (choices.length === 1) applyCompletion();
      }
    } else if (open && (event.key === 'ArrowDown' || event.key === 'ArrowUp')) {
      event.preventDefault();
      chosen = (chosen + (event.key === 'ArrowDown' ? 1 : choices.length - 1)) % choices.length;
      markChosen();
    } else if (event.key === 'Escape') {
      hideCompletion();
    } else if (event.key === 'ArrowUp' && sentIndex > 0) {
      event.preventDefault();
      input.value = sent[--sentIndex];
    } else if (event.key === 'ArrowDown' && sentIndex < sent.length) {
      event.preventDefault();
      sentIndex++;
      input.value = sent[sentIndex] || '';
    } else if (event.key === 'Enter' && open && input.value !== choices[chosen][0]) {
      event.preventDefault();
      applyCompletion();
    }
  });

  // Typing anywhere lands in the input box (the log keeps focus for scrolling keys).
  document.addEventListener('keydown', (event) => {
    if (document.activeElement === input || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key.length === 1 && !(document.activeElement instanceof HTMLButtonElement)) input.focus();
  });

  connect();
})();
