<#-- The Unified MFA step. `umfa` is filled by FormPage.java from the bridge's Form: status,
     message, error, open (a token is held), pending (push waiting), canPush, pushNumber, qr.
     Works with the keycloak and keycloak.v2 login themes. -->
<#import "template.ftl" as layout>
<@layout.registrationLayout displayMessage=false; section>
    <#if section = "header">
        ${msg("unifiedMfaTitle")}
    <#elseif section = "form">
        <div id="umfa" data-status="${umfa.status}" data-error="${umfa.error?c}">
            <#if umfa.message?has_content>
                <div id="umfa-message" role="alert"
                     class="${properties.kcAlertClass!} <#if umfa.error>pf-m-danger ${properties.kcAlertErrorClass!}<#else>pf-m-info</#if>">
                    <span class="${properties.kcAlertTitleClass!}">${umfa.message}</span>
                </div>
            </#if>

            <#if umfa.qr?has_content>
                <#if !umfa.message?has_content>
                    <p id="umfa-enroll-hint">${msg("unifiedMfaEnroll")}</p>
                </#if>
                <p style="text-align:center">
                    <img id="umfa-qr" src="${umfa.qr}" alt="${msg("unifiedMfaQrAlt")}"
                         style="width:240px;height:240px;image-rendering:pixelated">
                </p>
            </#if>

            <#if umfa.pending>
                <p id="umfa-number" style="font-size:3em;font-weight:bold;text-align:center;margin:0.3em 0">${umfa.pushNumber}</p>
                <p id="umfa-waiting">${msg("unifiedMfaPushWaiting")}</p>
            </#if>

            <#if umfa.open>
                <form id="umfa-form" class="${properties.kcFormClass!}" action="${url.loginAction}" method="post">
                    <div class="${properties.kcFormGroupClass!}">
                        <label for="umfa-code" class="${properties.kcLabelClass!}">
                            <#if umfa.pending>${msg("unifiedMfaOrCode")}<#else>${msg("unifiedMfaCode")}</#if>
                        </label>
                        <span class="${properties.kcInputClass!}">
                            <input id="umfa-code" name="code" type="text" inputmode="numeric"
                                   autocomplete="one-time-code" autofocus required>
                        </span>
                    </div>
                    <div class="${properties.kcFormGroupClass!}">
                        <button id="umfa-submit" type="submit" name="umfa-action" value="code"
                                class="${properties.kcButtonClass!} ${properties.kcButtonPrimaryClass!} ${properties.kcButtonBlockClass!}">${msg("unifiedMfaSubmit")}</button>
                        <#if umfa.canPush>
                            <button id="umfa-push" type="submit" name="umfa-action" value="push" formnovalidate
                                    class="${properties.kcButtonClass!} ${properties.kcButtonSecondaryClass!} ${properties.kcButtonBlockClass!}">${msg("unifiedMfaSendPush")}</button>
                        </#if>
                    </div>
                </form>
                <#if umfa.pending>
                    <form id="umfa-poll" action="${url.loginAction}" method="post">
                        <input type="hidden" name="umfa-action" value="poll">
                        <button id="umfa-check" type="submit"
                                class="${properties.kcButtonClass!} ${properties.kcButtonSecondaryClass!} ${properties.kcButtonBlockClass!}">${msg("unifiedMfaCheckNow")}</button>
                    </form>
                    <script>
                        (function () {
                            var code = document.getElementById("umfa-code");
                            function poll() {
                                if (code && code.value) {
                                    setTimeout(poll, 2000);
                                } else {
                                    document.getElementById("umfa-poll").submit();
                                }
                            }
                            setTimeout(poll, 2000);
                        })();
                    </script>
                </#if>
            <#else>
                <form id="umfa-restart-form" action="${url.loginAction}" method="post">
                    <button id="umfa-restart" type="submit" name="umfa-action" value="restart"
                            class="${properties.kcButtonClass!} ${properties.kcButtonPrimaryClass!} ${properties.kcButtonBlockClass!}">${msg("unifiedMfaRestart")}</button>
                </form>
            </#if>
        </div>
    </#if>
</@layout.registrationLayout>
