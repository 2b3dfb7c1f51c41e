// ebox-hub web console: small progressive helpers. Every page works without them.
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content;

  // Belgian national number (SSIN) and enterprise number (CBE): 97 - (number mod 97) is the check.
  function mod97(digits) { var r = 0; for (var i = 0; i < digits.length; i++) { r = (r * 10 + (digits.charCodeAt(i) - 48)) % 97; } return r; }
  function validSsin(v) {
    if (!/^\d{11}$/.test(v)) return false;
    var base = v.slice(0, 9), check = parseInt(v.slice(9), 10);
    return 97 - mod97(base) === check || 97 - mod97("2" + base) === check;
  }
  function validCbe(v) {
    if (!/^[01]\d{9}$/.test(v)) return false;
    return 97 - mod97(v.slice(0, 8)) === parseInt(v.slice(8), 10);
  }

  function recipientCheck(input) {
    var kind = document.getElementById(input.dataset.kindField);
    var out = document.getElementById(input.dataset.checkOutput);
    if (!out) return;
    var timer = null;
    function update() {
      var value = input.value.replace(/[\s.\-\/]/g, "");
      var isEnterprise = kind && kind.value === "enterprise";
      if (!value) { out.textContent = ""; out.dataset.state = ""; return; }
      var ok = isEnterprise ? validCbe(value) : validSsin(value);
      if (!ok) { out.textContent = out.dataset.badText; out.dataset.state = "bad"; input.setAttribute("aria-invalid", "true"); return; }
      input.removeAttribute("aria-invalid");
      out.textContent = out.dataset.goodText; out.dataset.state = "good";
      clearTimeout(timer);
      timer = setTimeout(function () {
        var body = new URLSearchParams({ kind: isEnterprise ? "enterprise" : "citizen", id: value });
        fetch("/web/api/recipient", { method: "POST", headers: { "X-CSRF-Token": csrf }, body: body, credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (answer) {
            if (!answer) return;
            out.textContent = answer.digital ? out.dataset.digitalText : out.dataset.paperText;
            out.dataset.state = "good";
          })
          .catch(function () {});
      }, 250);
    }
    input.addEventListener("input", update);
    if (kind) kind.addEventListener("change", update);
    update();
  }

  // A page that shows something still moving reloads itself (the journey of a message, the dashboard).
  function autoRefresh(el) {
    var seconds = parseFloat(el.dataset.refresh);
    if (seconds > 0) setTimeout(function () {
      var url = new URL(window.location.href);
      url.searchParams.delete("sent"); // a one-time notice ("Sent: ...") is not repeated by the refresh
      window.location.replace(url.toString());
    }, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-check-output]").forEach(recipientCheck);
    document.querySelectorAll("[data-refresh]").forEach(autoRefresh);
    document.querySelectorAll("[data-live]").forEach(function (el) {
      // operator dashboard: figures refreshed from a JSON endpoint
      var url = el.dataset.live;
      function tick() {
        fetch(url, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (data) {
          if (!data) return;
          Object.keys(data).forEach(function (key) {
            var target = el.querySelector('[data-key="' + key + '"]');
            if (target) target.textContent = data[key];
          });
        }).catch(function () {});
      }
      setInterval(tick, 2000);
    });
  });
})();
